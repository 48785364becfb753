"""Deploy and destroy through a :class:`lambdarun.session.Session` (its settings and target)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lambdarun.deploy.config import DeployConfig
from lambdarun.deploy.contributions import collect_resources
from lambdarun.deploy.deployer import Deployer
from lambdarun.deploy.package import BuiltPackage, PackageSpec, build_package, default_cache_dir
from lambdarun.deploy.plan import ApplyResult, DeployPlan, DeploySpec
from lambdarun.deploy.spec import resolve_spec

if TYPE_CHECKING:
    from lambdarun.config import Settings
    from lambdarun.session import Session

__all__ = ["deploy_config", "package_spec", "session_spec", "plan_deploy", "deploy", "plan_destroy", "destroy"]


def deploy_config(settings: Settings) -> DeployConfig:
    """The ``[deploy]`` section, or its defaults when the deploy plugin is not registered."""
    if "deploy" in settings.sections:
        return settings.section("deploy")
    return DeployConfig()


def package_spec(
    settings: Settings,
    *,
    requirements: str | Path | None = None,
    include: Sequence[str | Path] | None = None,
    layer: bool | None = None,
) -> PackageSpec:
    config = deploy_config(settings)
    requirements = requirements or config.requirements or None
    return PackageSpec(
        python_version=config.python_version or f"{sys.version_info.major}.{sys.version_info.minor}",
        architecture=config.architecture,
        requirements=Path(requirements).expanduser().resolve() if requirements else None,
        include=tuple(Path(p).expanduser().resolve() for p in (include if include is not None else config.include)),
        exclude=frozenset(config.exclude),
        layer=config.layer if layer is None else layer,
        cache_dir=Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir(),
        unzipped_limit=config.unzipped_limit,
    )


def _settings_with_deploy(session: Session) -> Settings:
    settings = session.settings
    if "deploy" not in settings.sections:
        import types

        import attrs

        settings = attrs.evolve(settings, sections=types.MappingProxyType({**settings.sections, "deploy": DeployConfig()}))
    return settings


def session_spec(
    session: Session,
    *,
    function_name: str | None = None,
    layer: bool | None = None,
    rotate_key: bool = False,
) -> DeploySpec:
    """The :class:`DeploySpec` of ``session``: its settings plus what its plugins contribute
    (``lambdarun_deploy_resources``: the durable checkpoint table, policy statements, variables)."""
    settings = _settings_with_deploy(session)
    return resolve_spec(
        settings,
        session.target,
        function_name=function_name,
        layer=layer,
        rotate_key=rotate_key,
        resources=collect_resources(session.pm, settings),
        default_backend=session.default_backend_id,
    )


def plan_deploy(
    session: Session,
    *,
    function_name: str | None = None,
    requirements: str | Path | None = None,
    include: Sequence[str | Path] | None = None,
    layer: bool | None = None,
    echo: Callable[[str], None] | None = None,
    package: BuiltPackage | None = None,
    rotate_key: bool = False,
) -> DeployPlan:
    """Build the package (or reuse the cached build) and compare with what exists. No writes.

    ``package`` deploys an already built package as is (its layer decides the layer mode).
    ``rotate_key`` replaces the key in the signing key secret (deploy never does otherwise).
    """
    settings = _settings_with_deploy(session)
    deployer = Deployer(session.target, echo=echo)
    if package is not None:
        layer = package.layer is not None
    spec = session_spec(session, function_name=function_name, layer=layer, rotate_key=rotate_key)
    deployer.preflight(spec)
    if package is None:
        package = build_package(package_spec(settings, requirements=requirements, include=include, layer=spec.layer))
    return deployer.plan(spec, package)


def deploy(
    session: Session,
    *,
    dry_run: bool = False,
    function_name: str | None = None,
    requirements: str | Path | None = None,
    include: Sequence[str | Path] | None = None,
    layer: bool | None = None,
    echo: Callable[[str], None] | None = None,
    package: BuiltPackage | None = None,
    rotate_key: bool = False,
) -> DeployPlan | ApplyResult:
    """Plan, then (unless ``dry_run``) apply. Returns the plan or the apply result."""
    plan = plan_deploy(
        session,
        function_name=function_name,
        requirements=requirements,
        include=include,
        layer=layer,
        echo=echo,
        package=package,
        rotate_key=rotate_key,
    )
    if dry_run:
        return plan
    return Deployer(session.target, echo=echo).apply(plan)


def plan_destroy(session: Session, *, function_name: str | None = None) -> DeployPlan:
    spec = session_spec(session, function_name=function_name)
    return Deployer(session.target).plan_destroy(spec)


def destroy(
    session: Session,
    *,
    dry_run: bool = False,
    function_name: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> DeployPlan | ApplyResult:
    """Delete what ``deploy`` created for the function (found by its tags), nothing else."""
    plan = plan_destroy(session, function_name=function_name)
    if dry_run:
        return plan
    return Deployer(session.target, echo=echo).apply(plan)
