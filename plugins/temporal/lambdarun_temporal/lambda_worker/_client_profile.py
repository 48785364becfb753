"""The Temporal client profile of a Lambda worker: the config file chain
(``TEMPORAL_CONFIG_FILE`` -> ``$LAMBDA_TASK_ROOT/temporal.toml`` -> ``./temporal.toml``),
``TEMPORAL_PROFILE`` and the ``TEMPORAL_*`` environment variables over the file."""

from __future__ import annotations

import os
from collections.abc import Mapping

import temporalio.envconfig

from lambdarun_temporal.errors import LambdaWorkerConfigError
from lambdarun_temporal.lambda_worker._defaults import ENV_CONFIG_FILE, lambda_default_config_file_path

__all__ = ["load_client_profile"]


def load_client_profile(env: Mapping[str, str] | None = None) -> temporalio.envconfig.ClientConfigProfile:
    """Load the client profile: config file chain (see ``lambda_default_config_file_path``),
    ``TEMPORAL_PROFILE``, then ``TEMPORAL_*`` environment variables over the file.

    A missing ``TEMPORAL_CONFIG_FILE``, an unknown key, a wrong type or a missing profile
    is a :class:`LambdaWorkerConfigError` that names the file and the key.
    """
    env = dict(os.environ if env is None else env)
    candidate = lambda_default_config_file_path(env)
    if env.get(ENV_CONFIG_FILE) and not candidate.is_file():
        raise LambdaWorkerConfigError(
            f"TEMPORAL_CONFIG_FILE={candidate} does not exist; point it at a temporal.toml "
            "or unset it to use $LAMBDA_TASK_ROOT/temporal.toml, ./temporal.toml or the "
            "environment only."
        )
    # no file in the chain: environment variables only
    path = candidate.absolute() if candidate.is_file() else None
    try:
        if path is None:
            return temporalio.envconfig.ClientConfigProfile.load(
                disable_file=True, override_env_vars=env
            )
        return temporalio.envconfig.ClientConfigProfile.load(
            config_source=path, config_file_strict=True, override_env_vars=env
        )
    except Exception as exc:  # temporalio's bridge ConfigError
        source = f"Temporal config file {path}" if path else "Temporal environment variables"
        profile = env.get("TEMPORAL_PROFILE") or "default"
        raise LambdaWorkerConfigError(
            f"{source} (profile {profile!r}) is invalid: {exc}\n"
            "Fix the key named above (valid profile keys: address, namespace, api_key, tls, "
            "codec, grpc_meta) or select another file with TEMPORAL_CONFIG_FILE."
        ) from exc
