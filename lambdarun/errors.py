"""One exception hierarchy for lambdarun.

Every error a user can meet derives from :class:`LambdarunError`; each message says
what happened *and* what to do about it.
"""

from __future__ import annotations

__all__ = [
    "LambdarunError",
    "ConfigError",
    "PluginError",
    "UnknownBackendError",
    "BackendNotInstalledError",
    "SerializationError",
    "UnpicklableArgumentError",
    "EnvelopeError",
    "EnvelopeVersionError",
    "EnvelopeSignatureError",
    "SigningKeyMissingError",
    "EnvelopeExpiredError",
    "OutcomeMismatchError",
    "EventError",
    "UntrustedLocationError",
    "FunctionKeyConflictError",
    "PythonVersionMismatchError",
    "MissingModuleError",
    "StorageError",
    "StorageKeyError",
    "InvocationError",
    "FunctionNotFoundError",
    "PayloadTooLargeError",
    "ThrottledError",
    "TargetError",
    "TaskTimeoutError",
    "TaskCancelledError",
    "RemoteExecutionError",
    "RemoteEnvironmentError",
    "RemoteControlFlowError",
    "RemoteSystemExit",
    "RemoteKeyboardInterrupt",
    "RemoteGeneratorExit",
    "InvocationOutcomeUnknownError",
    "DuplicateDeliveryError",
    "AttemptInProgressError",
    "AttemptCompletedError",
    "CheckpointError",
    "CheckpointConflictError",
    "ExecutionNotFoundError",
    "LeaseHeldError",
    "LeaseLostError",
]


class LambdarunError(Exception):
    """Base class of every error lambdarun raises on purpose."""


# --- configuration and plugins ---------------------------------------------------------


class ConfigError(LambdarunError, ValueError):
    """A configuration key or value is wrong; the message names the key, value and source."""


class PluginError(LambdarunError):
    """A plugin could not be loaded or does not honour the hook contract."""


class UnknownBackendError(PluginError, KeyError):
    """No installed plugin provides the requested backend."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BackendNotInstalledError(UnknownBackendError):
    """The backend exists as a lambdarun distribution that is not installed here."""


# --- serialization and the wire envelope -----------------------------------------------


class SerializationError(LambdarunError):
    """A value could not be encoded or decoded."""


class UnpicklableArgumentError(SerializationError, TypeError):
    """An argument of a call cannot be serialized; the message names its position."""


class EnvelopeError(SerializationError):
    """A wire envelope was refused before anything in it was unpickled."""


class EnvelopeVersionError(EnvelopeError):
    """The envelope's format version is not one this lambdarun understands."""


class EnvelopeSignatureError(EnvelopeError):
    """Signing is on and the envelope's HMAC signature is missing or wrong."""


class SigningKeyMissingError(EnvelopeSignatureError, ConfigError):
    """No signing key is known and ``allow_unsigned`` is not set: nothing is sent or accepted."""


class EnvelopeExpiredError(EnvelopeError):
    """The envelope was issued longer ago than ``envelope_max_age`` (or in the future)."""


class OutcomeMismatchError(EnvelopeError):
    """A (correctly signed) outcome belongs to another task or attempt than the one awaited."""


class PythonVersionMismatchError(EnvelopeError):
    """Pickled data was produced by another Python major.minor than the one decoding it."""


class MissingModuleError(EnvelopeError, ModuleNotFoundError):
    """Decoding needs a module that is not importable on this side."""


# --- Lambda events -------------------------------------------------------------------


class EventError(LambdarunError, ValueError):
    """A Lambda event was refused before anything in it ran (a field of the wrong type or
    encoding, or a location it may not choose)."""


class UntrustedLocationError(EventError):
    """An event named a location (``call_url``, ``result_url``, ...) outside the storage
    prefix the function is configured with; nothing was read or written there."""


# --- storage ---------------------------------------------------------------------------


class StorageError(LambdarunError):
    """A storage operation failed."""


class StorageKeyError(StorageError, KeyError):
    """The key does not exist in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- invocation and targets ------------------------------------------------------------


class TargetError(LambdarunError):
    """The execution target (local Lambda service or AWS) is unusable as configured."""


class FunctionKeyConflictError(TargetError):
    """The function verifies envelopes with another signing key than this caller's; lambdarun
    refuses to rewrite its key settings."""


class InvocationError(LambdarunError):
    """Invoking a Lambda function failed before the function could run."""


class FunctionNotFoundError(InvocationError):
    """The Lambda function does not exist on the target (deploy it, or check the name)."""


class PayloadTooLargeError(InvocationError):
    """The request is over Lambda's payload limit for its invocation type."""


class ThrottledError(InvocationError):
    """The function's concurrency limit was reached (Lambda's TooManyRequestsException)."""


class InvocationOutcomeUnknownError(InvocationError):
    """The connection was lost after the Invoke request was sent: the function may have run.

    Never re-sent blindly; a backend re-delivers the *same* attempt, whose claim makes the
    function run at most once (see :mod:`lambdarun.claims`).
    """


class TaskTimeoutError(LambdarunError, TimeoutError):
    """A task did not finish within its timeout."""


class TaskCancelledError(LambdarunError):
    """The task was cancelled before it produced a result."""


class RemoteExecutionError(LambdarunError):
    """The remote function raised an exception that cannot be rebuilt locally.

    ``original_type`` names the remote exception's class (``module.QualName``) and
    ``remote_traceback`` holds the formatted remote traceback.
    """

    def __init__(self, message: str, *, original_type: str = "", remote_traceback: str = ""):
        super().__init__(message)
        self.original_type = original_type
        self.remote_traceback = remote_traceback


class RemoteEnvironmentError(RemoteExecutionError):
    """The Lambda environment failed around the function (timeout, crash, init error)."""


class RemoteControlFlowError(RemoteExecutionError):
    """The remote function raised a control-flow exception (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``); it stays remote: the caller gets this
    ordinary exception, never the control flow itself."""

    def __reduce__(self):  # picklable with its keyword-only fields
        return (_rebuild_remote, (type(self), str(self), self.original_type, self.remote_traceback, self._extra()))

    def _extra(self) -> dict:
        return {}


def _rebuild_remote(cls, message, original_type, remote_traceback, extra):
    return cls(message, original_type=original_type, remote_traceback=remote_traceback, **extra)


class RemoteSystemExit(RemoteControlFlowError):
    """The remote function called ``sys.exit(code)`` (or raised ``SystemExit``); ``code``
    is its exit code. The caller's process does not exit."""

    def __init__(self, message: str, *, code: object = None, original_type: str = "builtins.SystemExit",
                 remote_traceback: str = "") -> None:
        super().__init__(message, original_type=original_type, remote_traceback=remote_traceback)
        self.code = code

    def _extra(self) -> dict:
        return {"code": self.code}


class RemoteKeyboardInterrupt(RemoteControlFlowError):
    """``KeyboardInterrupt`` was raised in the remote function (not in the caller)."""


class RemoteGeneratorExit(RemoteControlFlowError):
    """``GeneratorExit`` escaped the remote function."""


# --- delivery (at most once per attempt) -------------------------------------------------


class DuplicateDeliveryError(LambdarunError):
    """A call attempt was delivered again and was not run again (at most once per attempt);
    the base of :class:`AttemptInProgressError` and :class:`AttemptCompletedError`. Submit
    the call again (a new attempt) if running it twice is safe."""


class AttemptInProgressError(DuplicateDeliveryError):
    """A second delivery of a call attempt arrived while the first was still running and
    the first did not finish within the second's remaining time."""


class AttemptCompletedError(DuplicateDeliveryError):
    """A delivery arrived for a call attempt that already ran and whose outcome was already
    delivered to the caller (and released)."""


# --- checkpointing ---------------------------------------------------------------------


class CheckpointError(LambdarunError):
    """A checkpoint store operation failed."""


class CheckpointConflictError(CheckpointError):
    """Another writer changed the execution since it was loaded (optimistic concurrency)."""


class ExecutionNotFoundError(CheckpointError, KeyError):
    """No durable execution with that id exists in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LeaseHeldError(CheckpointError):
    """Another driver holds the execution's lease (one driver per execution).

    ``lease`` is the :class:`lambdarun.types.Lease` found in the store: who holds it, since
    when, and when it expires unless its holder renews it.
    """

    def __init__(self, message: str, *, lease: object) -> None:
        super().__init__(message)
        self.lease = lease


class LeaseLostError(CheckpointError):
    """This driver's lease expired and another driver took it over; this one must stop."""
