"""Value objects of a deployment: what is wanted (:class:`DeploySpec`), what will be done
(:class:`DeployPlan` of :class:`Action`), what was done (:class:`ApplyResult`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from lambdarun.deploy.contributions import PolicyStatement, RoleResource, TableResource
    from lambdarun.deploy.package import BuiltPackage

__all__ = ["Change", "Action", "DeploySpec", "DeployPlan", "ApplyResult", "MANAGED_TAG", "FUNCTION_TAG"]

#: every resource deploy creates carries these tags; destroy deletes only what has them
MANAGED_TAG = "lambdarun:managed-by"
MANAGED_VALUE = "lambdarun-deploy"
FUNCTION_TAG = "lambdarun:function"


class Change(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    NOOP = "no-op"
    DELETE = "delete"


@attrs.frozen
class Action:
    """One step of a plan.

    :param change: create, update, no-op or delete.
    :param kind: ``bucket``, ``table``, ``secret``, ``role``, ``role-policy``, ``layer``,
        ``code-upload``, ``function``, ``function-code``, ``function-configuration``,
        ``extra-role`` (a role a plugin contributed) or ``objects``.
    :param name: the resource (bucket name, role name, function name, ``s3://`` URL...).
    :param reason: why (what differs, or why nothing needs doing).
    :param params: what applying needs (request parameters), not shown in the plan.
    """

    change: Change
    kind: str
    name: str
    reason: str = ""
    params: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    def __str__(self) -> str:
        text = f"{self.change.value:<7} {self.kind:<23} {self.name}"
        return f"{text}  ({self.reason})" if self.reason else text


@attrs.frozen
class DeploySpec:
    """The wanted state of one lambdarun function and its resources."""

    function_name: str
    region: str
    account: str
    role_name: str
    bucket: str
    prefix: str
    #: the DynamoDB tables the plugins contributed (``lambdarun_deploy_resources``)
    tables: tuple[TableResource, ...] = attrs.field(converter=tuple)
    runtime: str
    architecture: str
    memory_size: int
    timeout: int
    environment: Mapping[str, str] = attrs.field(factory=dict)
    layer: bool = False
    handler: str = "lambdarun.runtime.handler"
    direct_upload_limit: int = 50 * 1024 * 1024
    #: advice shown with the plan (settings the caller's side needs to use this function)
    notes: tuple[str, ...] = ()
    #: Secrets Manager secret (name or ARN) holding the envelope signing key
    signing_secret: str = ""
    #: the configured signing_key to store in that secret (None: generate one)
    signing_key: str | None = attrs.field(default=None, repr=False)
    #: replace the key of an existing secret (``lambdarun deploy --rotate-key``)
    rotate_key: bool = False
    #: more statements of the execution role's policy, contributed by plugins
    statements: tuple[PolicyStatement, ...] = attrs.field(default=(), converter=tuple)
    #: other roles the plugins contributed (assumed by third parties, e.g. Temporal)
    roles: tuple[RoleResource, ...] = attrs.field(default=(), converter=tuple)
    #: more CreateFunction members contributed for the deployed backend (e.g. DurableConfig);
    #: set when the function is created only
    create_config: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def table(self) -> str | None:
        """The first contributed table's name (the durable checkpoint table), or None."""
        return self.tables[0].name if self.tables else None

    @property
    def tags(self) -> dict[str, str]:
        return {MANAGED_TAG: MANAGED_VALUE, FUNCTION_TAG: self.function_name}

    @property
    def layer_name(self) -> str:
        return f"{self.function_name}-deps"

    @property
    def code_prefix(self) -> str:
        """Where code zips over the direct-upload limit go in the bucket."""
        return f"{self.prefix}/deploy/{self.function_name}/"

    @property
    def storage_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@attrs.frozen
class DeployPlan:
    """What ``deploy`` (or ``destroy``) will do, in order. ``--dry-run`` prints it."""

    operation: str  # "deploy" | "destroy"
    target: str
    spec: DeploySpec
    actions: tuple[Action, ...]
    package: BuiltPackage | None = None

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.change is not Change.NOOP)

    @property
    def is_noop(self) -> bool:
        return not self.changes

    def render(self) -> str:
        spec = self.spec
        lines = [
            f"lambdarun {self.operation}: function {spec.function_name!r} on target {self.target!r} "
            f"(region {spec.region}, account {spec.account})"
        ]
        if self.package is not None:
            pkg = self.package
            lines.append(
                f"  package: {pkg.function.size / 1e6:.1f} MB zipped, {pkg.unzipped_size / 1e6:.1f} MB "
                f"unzipped, {spec.runtime} {spec.architecture}, "
                f"{'cached build' if pkg.cached else 'new build'} (CodeSha256 {pkg.function.code_sha256})"
            )
            if pkg.layer is not None:
                lines.append(f"  layer: {pkg.layer.size / 1e6:.1f} MB zipped (CodeSha256 {pkg.layer.code_sha256})")
        lines += [f"  {action}" for action in self.actions]
        if self.operation == "deploy":
            lines += [f"note: {note}" for note in spec.notes]
        if self.is_noop:
            lines.append(
                "nothing to do: everything is up to date"
                if self.operation == "deploy"
                else "nothing to do: nothing created by lambdarun deploy remains"
            )
        return "\n".join(lines)


@attrs.frozen
class ApplyResult:
    """What applying a plan did."""

    plan: DeployPlan
    applied: tuple[Action, ...]

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def render(self) -> str:
        if not self.applied:
            if self.plan.operation == "deploy":
                return f"function {self.plan.spec.function_name!r} is up to date: nothing to do"
            return "nothing to destroy"
        verb = {"create": "created", "update": "updated", "delete": "deleted"}
        lines = [f"{verb[a.change.value]:<8} {a.kind:<23} {a.name}" for a in self.applied]
        return "\n".join(lines)
