"""The environment of a runtime function: the ``LAMBDARUN_*`` variables it needs.

One builder for every function lambdarun creates or deploys: backends (through
:meth:`lambdarun.backends.Backend.function_environment`) and ``lambdarun deploy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambdarun.config import Settings

__all__ = ["function_environment", "NOT_FORWARDED_SECTIONS"]


#: sections never forwarded into a function: where the caller runs, not where the function does
NOT_FORWARDED_SECTIONS = frozenset({"aws", "local", "deploy", "polling"})


def function_environment(
    settings: Settings,
    *,
    storage_url: str | None = None,
    function_name: str | None = None,
    forward_settings: bool = False,
) -> dict[str, str]:
    """Environment variables a function running ``lambdarun.runtime.handler`` needs.

    Inside Lambda lambdarun reaches AWS services as plain AWS (target ``aws``): on the local
    target the ``AWS_ENDPOINT_URL_*`` variables of the environment point boto3 at the local
    services. ``storage_url`` (default: the ``storage_url`` setting) is the only prefix the
    function's events may name locations under. The signing key never travels in the
    environment: only the name of the secret holding it (``signing_key_secret``; the local
    target adds its own in :meth:`~lambdarun.types.Target.ensure_function`).

    :param function_name: the function's own name (``LAMBDARUN_FUNCTION_NAME``), for a
        deployed function.
    :param forward_settings: also forward every setting changed from its default: the core's
        ``backend`` and ``log_level`` and each field of the plugins' sections (except
        :data:`NOT_FORWARDED_SECTIONS`), as ``lambdarun deploy`` does so the deployed function
        is configured like the caller. Backends creating their function on the fly leave it
        off: call options differ per call and would change the function's configuration.
    """
    environment = {"LAMBDARUN_TARGET": "aws", "LAMBDARUN_REGION": settings.region}
    storage_url = storage_url or settings.storage_url
    if storage_url:
        environment["LAMBDARUN_STORAGE_URL"] = storage_url
    if function_name:
        environment["LAMBDARUN_FUNCTION_NAME"] = function_name
    if settings.signing_key_secret:
        environment["LAMBDARUN_SIGNING_KEY_SECRET"] = settings.signing_key_secret
    if settings.source_of("envelope_max_age") != "default":
        environment["LAMBDARUN_ENVELOPE_MAX_AGE"] = repr(settings.envelope_max_age)
    if settings.allow_unsigned and settings.source_of("allow_unsigned") != "default":
        environment["LAMBDARUN_ALLOW_UNSIGNED"] = "true"
    if forward_settings:
        environment.update(_changed_settings(settings))
    return environment


def _changed_settings(settings: Settings) -> dict[str, str]:
    env: dict[str, str] = {}
    for key in ("backend", "log_level"):
        if settings.source_of(key) != "default":
            value = getattr(settings, key)
            if value is not None:
                env[f"LAMBDARUN_{key.upper()}"] = str(value)
    for name, section in sorted(settings.sections.items()):
        if name in NOT_FORWARDED_SECTIONS:
            continue
        for field in getattr(type(section), "__attrs_attrs__", ()):
            if settings.source_of(f"{name}.{field.name}") == "default":
                continue
            value = getattr(section, field.name)
            if isinstance(value, bool):
                value = "true" if value else "false"
            if isinstance(value, (str, int, float)):
                env[f"LAMBDARUN_{name.upper()}__{field.name.upper()}"] = str(value)
    return env
