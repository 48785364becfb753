"""The wanted state of a deployment, from settings and the plugins' contributions:
:func:`resolve_spec` turns :class:`~lambdarun.config.Settings` (plus what the plugins
declared through ``lambdarun_deploy_resources``) into a
:class:`~lambdarun.deploy.plan.DeploySpec`, with the notes the caller's side needs."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from lambdarun.deploy.base import ACCESS_DENIED, client_error, error_code
from lambdarun.deploy.config import DeployConfig
from lambdarun.deploy.contributions import DeployResources
from lambdarun.deploy.errors import ContributionError, DeployPermissionError
from lambdarun.deploy.plan import DeploySpec
from lambdarun.environment import NOT_FORWARDED_SECTIONS
from lambdarun.environment import function_environment as core_function_environment
from lambdarun.signing import SECRET_VARIABLE

if TYPE_CHECKING:
    from lambdarun.config import Settings
    from lambdarun.types import Target

__all__ = ["resolve_spec", "function_environment", "default_secret_name"]



def _urls_in(settings: Settings) -> list[str]:
    values: list[Any] = [settings.storage_url]
    for name, section in settings.sections.items():
        if name in NOT_FORWARDED_SECTIONS:
            continue
        for field in getattr(type(section), "__attrs_attrs__", ()):
            values.append(getattr(section, field.name))
    return [v for v in values if isinstance(v, str) and "://" in v]


def _backend_setting(settings: Settings, backend: str | None, key: str) -> str | None:
    """``key`` of the default backend's section when the user set it (e.g. ``[covalent]
    function_name`` or ``execution_role``), so deploy creates what that backend will use."""
    section = settings.sections.get(backend) if backend else None
    if section is None or settings.source_of(f"{backend}.{key}") == "default":
        return None
    value = getattr(section, key, None)
    return value if isinstance(value, str) and value else None


def function_environment(settings: Settings, *, function_name: str, storage_url: str) -> dict[str, str]:
    """The ``LAMBDARUN_*`` variables the deployed function needs: the core's one builder
    (:func:`lambdarun.environment.function_environment`) with every changed setting forwarded
    (the core keys that matter on the Lambda side and the backends' sections)."""
    # the signing key never goes into the environment: the function reads it from the secret
    # named in LAMBDARUN_SIGNING_KEY_SECRET (set by resolve_spec)
    return core_function_environment(settings, storage_url=storage_url, function_name=function_name,
                                     forward_settings=True)


def default_secret_name(function_name: str) -> str:
    """The secret deploy creates for a function's signing key (unless signing_key_secret names one)."""
    return f"lambdarun/{function_name}/signing-key"


def resolve_spec(
    settings: Settings,
    target: Target,
    *,
    function_name: str | None = None,
    layer: bool | None = None,
    rotate_key: bool = False,
    resources: DeployResources | None = None,
    default_backend: str | None = None,
) -> DeploySpec:
    """The :class:`DeploySpec` for ``settings`` on ``target`` (asks STS for the account).

    ``default_backend`` is the backend calls use when they name none
    (:attr:`lambdarun.session.Session.default_backend_id`, which resolves the registry's
    default); without it, only the configuration's ``backend`` is known.

    ``resources`` are the plugins' contributions
    (:func:`lambdarun.deploy.contributions.collect_resources`); without them the
    deployment has no table, no extra statement and no extra variable.
    """
    config: DeployConfig = settings.section("deploy")
    backend = default_backend or settings.backend
    resources = resources if resources is not None else DeployResources()
    name = (
        function_name
        or (settings.function_name if settings.source_of("function_name") != "default" else None)
        or _backend_setting(settings, backend, "function_name")
        or settings.function_name
    )
    account = _account(target)
    bucket, prefix = config.bucket, config.prefix.strip("/")
    if settings.storage_url and settings.storage_url.startswith("s3://"):
        url_bucket, _, url_prefix = settings.storage_url[len("s3://"):].partition("/")
        bucket = bucket or url_bucket
        prefix = prefix or url_prefix.strip("/")
    bucket = bucket or f"lambdarun-{account}-{settings.region}"
    prefix = prefix or "lambdarun"
    python = config.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    storage_url = f"s3://{bucket}/{prefix}"
    notes = []
    if settings.storage_url != storage_url:
        notes.append(
            f"callers need storage_url = {storage_url!r} (lambdarun.toml or LAMBDARUN_STORAGE_URL) "
            "to spill large payloads to this function's bucket"
        )
    for url in (u for u in _urls_in(settings) if u != settings.storage_url):
        if url.startswith("s3://") and url.rstrip("/") != storage_url and not url.startswith(storage_url + "/"):
            notes.append(
                f"{url} (a backend setting) is outside {storage_url}/, which is all the function's "
                "role may use: move it under that prefix, or grant the role access yourself"
            )
    secret = settings.signing_key_secret or default_secret_name(name)
    if settings.signing_key_secret != secret:
        notes.append(
            f"callers need signing_key_secret = {secret!r} (lambdarun.toml or "
            "LAMBDARUN_SIGNING_KEY_SECRET) to sign their calls with this function's key"
            + (", or the same signing_key" if settings.signing_key else "")
        )
    section = settings.sections.get(backend) if backend else None
    backend_fn = getattr(section, "function_name", None) if section is not None else None
    if isinstance(backend_fn, str) and backend_fn and backend_fn != name:
        notes.append(
            f"the {backend!r} backend calls the function {backend_fn!r}: set "
            f"[{backend}] function_name = {name!r}, or deploy with --function {backend_fn}"
        )
    if config.table and config.table not in {t.name for t in resources.tables}:
        raise ContributionError(
            f"[deploy] table = {config.table!r}, but no installed plugin declares a table of that "
            "name (its key schema comes from the plugin that uses it): install the plugin that "
            "needs it (lambdarun-durable for its checkpoint table), or remove [deploy] table. "
            "Nothing was created."
        )
    environment = function_environment(settings, function_name=name, storage_url=storage_url)
    clashes = sorted(set(resources.environment) & set(environment))
    if clashes:
        raise ContributionError(
            f"a plugin contributes the variables {clashes}, which deploy sets from the settings; "
            "the plugin must use names of its own. Nothing was created."
        )
    return DeploySpec(
        function_name=name,
        region=settings.region,
        account=account,
        role_name=config.role_name or _backend_setting(settings, backend, "execution_role") or f"{name}-role",
        bucket=bucket,
        prefix=prefix,
        tables=tuple(resources.tables),
        runtime=f"python{python}",
        architecture=config.architecture,
        memory_size=config.memory_size,
        timeout=config.timeout,
        environment={**environment, **resources.environment, SECRET_VARIABLE: secret},
        layer=config.layer if layer is None else layer,
        direct_upload_limit=config.direct_upload_limit,
        notes=tuple(notes),
        signing_secret=secret,
        signing_key=settings.signing_key,
        rotate_key=rotate_key,
        statements=tuple(resources.statements),
        roles=tuple(resources.roles),
        create_config=dict(resources.function_config.get(backend or "", {})),
    )


def _account(target: Target) -> str:
    ClientError = client_error()
    try:
        return str(target.client("sts").get_caller_identity()["Account"])
    except ClientError as exc:
        if error_code(exc) in ACCESS_DENIED:
            raise DeployPermissionError(
                f"the AWS credentials were refused ({error_code(exc)}): {exc}. Configure valid "
                "credentials ([aws] profile / credentials_file, or the AWS_* variables).",
                operation="GetCallerIdentity",
                action="sts:GetCallerIdentity",
            ) from exc
        raise
