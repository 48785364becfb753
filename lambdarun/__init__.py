"""lambdarun: run Python code on AWS Lambda, or on a faithful local Lambda, through plugins.

    import lambdarun

    lambdarun.run(pow, 2, 10)                          # 1024, computed on Lambda
    fut = lambdarun.submit(pow, 2, 10)                 # a concurrent.futures.Future
    list(lambdarun.map(abs, [-1, -2], backend="covalent"))

Backends (``covalent``, ``temporal``, ``durable``) and targets (``local``, ``aws``) are
plugins; see :mod:`lambdarun.hookspecs` to write your own.
"""

from __future__ import annotations

from lambdarun.api import map, run, submit
from lambdarun.errors import (
    AttemptCompletedError,
    AttemptInProgressError,
    BackendNotInstalledError,
    ConfigError,
    DuplicateDeliveryError,
    EnvelopeError,
    EnvelopeSignatureError,
    InvocationError,
    InvocationOutcomeUnknownError,
    LambdarunError,
    PluginError,
    PythonVersionMismatchError,
    RemoteControlFlowError,
    RemoteExecutionError,
    RemoteGeneratorExit,
    RemoteKeyboardInterrupt,
    RemoteSystemExit,
    SerializationError,
    TaskCancelledError,
    TaskTimeoutError,
    UnknownBackendError,
    UnpicklableArgumentError,
)
from lambdarun.futures import LambdaFuture
from lambdarun.hookspecs import hookimpl
from lambdarun.version import __version__

__all__ = [
    "__version__",
    "run",
    "submit",
    "map",
    "hookimpl",
    "LambdaFuture",
    "get_session",
    "Session",
    "LambdarunError",
    "ConfigError",
    "PluginError",
    "UnknownBackendError",
    "BackendNotInstalledError",
    "SerializationError",
    "UnpicklableArgumentError",
    "EnvelopeError",
    "EnvelopeSignatureError",
    "PythonVersionMismatchError",
    "InvocationError",
    "TaskTimeoutError",
    "TaskCancelledError",
    "RemoteExecutionError",
    "RemoteControlFlowError",
    "RemoteSystemExit",
    "RemoteKeyboardInterrupt",
    "RemoteGeneratorExit",
    "InvocationOutcomeUnknownError",
    "DuplicateDeliveryError",
    "AttemptInProgressError",
    "AttemptCompletedError",
]


def __getattr__(name: str):  # lazy: keep `import lambdarun` light
    if name in ("Session", "get_session"):
        from lambdarun import session

        return getattr(session, name)
    raise AttributeError(f"module 'lambdarun' has no attribute {name!r}")
