"""Errors of the temporal backend; all derive from :class:`lambdarun.errors.LambdarunError`."""

from __future__ import annotations

from lambdarun.errors import ConfigError, LambdarunError, TargetError

__all__ = [
    "TemporalBackendError",
    "DevServerError",
    "LambdaWorkerConfigError",
    "LambdaTimeoutTooShortError",
    "TemporalConnectError",
    "WorkerStartError",
    "WorkerEventError",
    "ServerlessWorkerError",
]


class TemporalBackendError(LambdarunError):
    """Base class of the temporal backend's errors."""


class DevServerError(TemporalBackendError, TargetError):
    """The local Temporal dev server could not be started."""


class LambdaWorkerConfigError(TemporalBackendError, ConfigError):
    """The Lambda worker's configuration (file, environment or configure callback) is wrong.

    A ``ValueError``, as the reference ``temporalio.contrib.aws.lambda_worker`` raises for a
    missing version or task queue."""


class LambdaTimeoutTooShortError(TemporalBackendError, RuntimeError):
    """The Lambda invocation has too little time left for the worker to do any work.

    A ``RuntimeError`` (not a ``ValueError``), as the reference raises."""


class TemporalConnectError(TemporalBackendError, ConnectionError):
    """The worker could not connect to the Temporal server in the time it had."""


class WorkerStartError(TemporalBackendError):
    """The Temporal worker could not be created with the configured options."""


class WorkerEventError(TemporalBackendError, ValueError):
    """A worker event tried to choose what only the worker function's own configuration
    decides (the Temporal server, namespace, TLS, credentials); nothing was connected."""


class ServerlessWorkerError(TemporalBackendError, TargetError):
    """The Temporal server refused the worker deployment version with its compute config
    (Serverless Workers), or cannot invoke the worker function."""
