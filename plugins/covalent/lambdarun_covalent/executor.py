"""``from lambdarun_covalent.executor import AWSLambdaExecutor``.

The class lives in :mod:`lambdarun_covalent.awslambda` because Covalent names an executor
plugin after the *module* that defines it (``executor="awslambda"``).
"""

try:  # Covalent (when installed) imports this module's twin through its entry point: let it
    import covalent  # noqa: F401  go first, so its plugin scan sees the finished class
except Exception:  # not installed (or broken): the executor works standalone
    pass

from lambdarun_covalent.awslambda import (  # noqa: E402
    _EXECUTOR_PLUGIN_DEFAULTS,
    COVALENT_AVAILABLE,
    EXECUTOR_PLUGIN_NAME,
    AWSLambdaExecutor,
    ExecutorTaskCancelledError,
    covalent_config_file,
    read_covalent_section,
    resolve_settings,
)

__all__ = [
    "AWSLambdaExecutor",
    "EXECUTOR_PLUGIN_NAME",
    "_EXECUTOR_PLUGIN_DEFAULTS",
    "COVALENT_AVAILABLE",
    "ExecutorTaskCancelledError",
    "covalent_config_file",
    "read_covalent_section",
    "resolve_settings",
]
