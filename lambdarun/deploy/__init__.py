"""``lambdarun deploy``: ship lambdarun, the installed backends and the user's requirements to
a Lambda function, on AWS (or any endpoint URL) or on the local target.

Programmatic use::

    from lambdarun.deploy import deploy, destroy

    result = deploy(session, requirements="requirements.txt")   # plan + apply
    plan = deploy(session, dry_run=True)                        # the plan only
    destroy(session)

See ``docs/deploy.md`` for what is created and how ``destroy`` finds it again. Modules:
``spec`` (settings to :class:`DeploySpec`), ``contributions`` (what plugins declare through
``lambdarun_deploy_resources``), ``deployer`` (the plan/apply/rollback/destroy flow), one
module per resource kind (``bucket``, ``table``, ``secret``, ``role`` with ``policy``,
``layer``, ``function``), and the package builder (``package``).
"""

from lambdarun.deploy.api import deploy, destroy, package_spec, plan_deploy, plan_destroy, session_spec
from lambdarun.deploy.config import DIRECT_UPLOAD_LIMIT, UNZIPPED_LIMIT, DeployConfig
from lambdarun.deploy.contributions import (
    DeployResources,
    KeyAttribute,
    PolicyStatement,
    TableResource,
    collect_resources,
)
from lambdarun.deploy.deployer import Deployer
from lambdarun.deploy.errors import (
    BucketRegionError,
    BucketUnavailableError,
    ContributionError,
    DependencyInstallError,
    DeployError,
    DeployPermissionError,
    FunctionNotManagedError,
    NoCompatibleWheelError,
    PackageTooLargeError,
    UnsupportedOnTargetError,
)
from lambdarun.deploy.package import Archive, BuiltPackage, PackageSpec, build_package
from lambdarun.deploy.plan import Action, ApplyResult, Change, DeployPlan, DeploySpec
from lambdarun.deploy.policy import execution_policy, trust_policy
from lambdarun.deploy.spec import resolve_spec

__all__ = [
    "deploy",
    "destroy",
    "plan_deploy",
    "plan_destroy",
    "package_spec",
    "session_spec",
    "Deployer",
    "resolve_spec",
    "DeployResources",
    "TableResource",
    "KeyAttribute",
    "PolicyStatement",
    "collect_resources",
    "DeployConfig",
    "DIRECT_UPLOAD_LIMIT",
    "UNZIPPED_LIMIT",
    "PackageSpec",
    "Archive",
    "BuiltPackage",
    "build_package",
    "Action",
    "ApplyResult",
    "Change",
    "DeployPlan",
    "DeploySpec",
    "execution_policy",
    "trust_policy",
    "DeployError",
    "DeployPermissionError",
    "BucketRegionError",
    "BucketUnavailableError",
    "PackageTooLargeError",
    "NoCompatibleWheelError",
    "DependencyInstallError",
    "FunctionNotManagedError",
    "UnsupportedOnTargetError",
    "ContributionError",
]
