"""Value objects and the protocols that plugins implement.

The hook specifications in :mod:`lambdarun.hookspecs` return objects that satisfy these
protocols. They are deliberately small: a plugin author should be able to read this module
in five minutes and know exactly what to build.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = [
    "Encoded",
    "Decoded",
    "Storage",
    "Target",
    "FunctionSpec",
    "InvokeResponse",
    "InvokeHandle",
    "Invoker",
    "StorageHandle",
    "Poller",
    "Checkpoint",
    "CheckpointStore",
    "Lease",
    "LambdaServiceHost",
    "LambdaServiceExtension",
    "RawInvokeResult",
    "InvocationType",
]


# --- serialization ---------------------------------------------------------------------


@attrs.frozen
class Encoded:
    """A value encoded by one serializer. ``tag`` names the serializer, e.g. ``"msgpack"``.

    ``version_sensitive``: the bytes only load on the Python major.minor that wrote them
    (pickle and its kin); the reading side then refuses them, typed
    (:class:`~lambdarun.errors.PythonVersionMismatchError`), under another Python instead of
    unpickling. Travels with the part (inside the signed envelope).
    """

    tag: str
    data: bytes
    version_sensitive: bool = False


@attrs.frozen
class Decoded:
    """The result of a decode hook. Wrapped so that ``None`` can be a decoded value."""

    value: Any


# --- storage ---------------------------------------------------------------------------


@runtime_checkable
class Storage(Protocol):
    """Blobs under one base URL (``file:///dir`` or ``s3://bucket/prefix``).

    Keys are ``/``-separated strings relative to :attr:`url`. Implementations are
    thread-safe and reuse their connections.
    """

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any previous value."""

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` only if ``key`` holds nothing yet, atomically (two
        concurrent creates: exactly one returns True); False when ``key`` exists. S3: a
        conditional ``PutObject`` with ``If-None-Match: *``; a directory: ``O_EXCL``/link.
        Used for claims (:mod:`lambdarun.claims`)."""

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise :class:`~lambdarun.errors.StorageKeyError`."""

    def exists(self, key: str) -> bool:
        """True when ``key`` holds a value."""

    def list(self, prefix: str) -> list[str]:
        """All keys starting with ``prefix`` (one listing call per page, never one per key)."""

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the keys; missing keys are not an error."""

    def url_for(self, key: str) -> str:
        """The absolute URL of ``key`` (``s3://bucket/prefix/key``)."""


# --- targets and invocation -------------------------------------------------------------


class InvocationType(str, enum.Enum):
    REQUEST_RESPONSE = "RequestResponse"
    EVENT = "Event"
    DRY_RUN = "DryRun"


@attrs.frozen
class FunctionSpec:
    """What a Lambda function must look like for a backend to use it.

    On the local target :meth:`Target.ensure_function` creates it from the current Python
    environment; on AWS it checks that ``lambdarun deploy`` created it.
    """

    name: str
    handler: str = "lambdarun.runtime.handler"
    timeout: int = 900
    memory_size: int = 1024
    environment: Mapping[str, str] = attrs.field(factory=dict)
    reserved_concurrency: int | None = None
    #: execution role ARN (AWS); None lets the target choose (deploy creates one)
    role: str | None = None
    #: the function's ``DurableConfig`` (``{"ExecutionTimeout": seconds, ...}``): a durable
    #: function, whose every Invoke starts a durable execution; set only when it is created
    durable_config: Mapping[str, Any] | None = None


@runtime_checkable
class Target(Protocol):
    """Where Lambda runs: ``local`` (the embedded Lambda service + moto) or ``aws``.

    Backends use a target only through this protocol, so they never know which one it is.
    """

    name: str
    region: str
    #: how many invocations run at once (more synchronous ones are throttled), or None when
    #: the target does not say (AWS: the account's limit); used to size thread pools
    concurrency_limit: int | None
    #: True when its functions run on this machine (the ``local`` target), so a service
    #: listening on this machine's loopback (e.g. a Temporal dev server) is reachable by them
    runs_on_this_machine: bool

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` ("lambda", "s3", "dynamodb", ...), created once
        per process and reused (clients are thread-safe)."""

    def endpoint_url(self, service: str) -> str | None:
        """The endpoint URL for ``service``, or None for the AWS default."""

    def ensure_function(self, spec: FunctionSpec) -> str:
        """Make sure the function exists and return its name; raise
        :class:`~lambdarun.errors.FunctionNotFoundError` (saying to run ``lambdarun deploy``)
        where it cannot be created."""

    def stop_invocation(self, function_name: str, marker: str) -> bool:
        """Stop the invocation whose ClientContext carries ``custom.lambdarun_attempt ==
        marker`` (kill its environment, or drop it while queued); False when nothing was
        stopped or the target cannot do it (AWS Lambda has no such API)."""

    def state_dir(self) -> Path | None:
        """The folder on this machine where the target keeps its state (the local target:
        ``[local] state_dir``), where tools beside it (the dashboard's run journal) keep
        theirs; None when the target keeps nothing on this machine (AWS). Never starts
        anything."""

    def default_storage_url(self) -> str:
        """The URL of lambdarun's scratch storage on this target (bucket created if needed)."""

    def ensure_storage(self, url: str) -> str:
        """Make sure the storage at ``url`` exists where this target creates storage (the
        local target creates an ``s3://`` bucket in its region; AWS leaves buckets to
        ``lambdarun deploy``) and return ``url``."""

    def environment(self) -> dict[str, str]:
        """Environment variables a Lambda function needs to reach this target's services."""

    def signing_key(self) -> bytes | None:
        """The key signing this caller's envelopes: ``signing_key`` from the settings, else
        the secret named by ``signing_key_secret`` (read once), else the target's own (the
        local stack generates one per stack); None when none is known."""

    def signing_key_secret(self) -> str | None:
        """The Secrets Manager secret (name or ARN) holding :meth:`signing_key`, for a
        function's ``LAMBDARUN_SIGNING_KEY_SECRET``; the local target stores its key (or the
        configured one) in its own Secrets Manager. None when there is no key."""

    def close(self) -> None:
        """Release clients and, for an embedded stack, stop what this process started."""


@attrs.frozen
class InvokeResponse:
    """A finished invocation, shaped like boto3's ``Invoke`` response."""

    status_code: int
    payload: bytes
    function_error: str | None = None  # "Unhandled" / "Handled" like X-Amz-Function-Error
    log_tail: str | None = None  # decoded LogResult when LogType=Tail was asked
    executed_version: str | None = None
    request_id: str | None = None


@attrs.define(eq=False)  # hashable by identity: handles go in sets
class InvokeHandle:
    """An invocation in flight.

    ``future`` resolves to an :class:`InvokeResponse` (synchronous invoke running in a
    thread) and is None for an asynchronous (``Event``) invoke, whose completion is
    observed through storage with a :class:`StorageHandle`.
    """

    function_name: str
    invocation_type: InvocationType
    future: Any = None  # concurrent.futures.Future[InvokeResponse] | None
    request_id: str | None = None


class Invoker(Protocol):
    """Invokes Lambda functions on one target."""

    def invoke(
        self,
        function_name: str,
        payload: bytes,
        *,
        invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE,
        log_tail: bool = False,
        client_context: Mapping[str, Any] | None = None,
    ) -> InvokeResponse:
        """Invoke and wait (``RequestResponse``), or queue (``Event``: status 202, empty payload).

        Raises :class:`~lambdarun.errors.FunctionNotFoundError`,
        :class:`~lambdarun.errors.PayloadTooLargeError`,
        :class:`~lambdarun.errors.ThrottledError` or
        :class:`~lambdarun.errors.InvocationError`.
        """

    def invoke_async(self, function_name: str, payload: bytes, **kwargs: Any) -> InvokeHandle:
        """Start a synchronous invoke in the invoker's thread pool and return its handle."""


@attrs.frozen
class StorageHandle:
    """Completion of an asynchronous task, signalled by ``key`` appearing in ``storage``.

    Handles that share ``prefix`` are checked together with one ``list(prefix)`` call.
    """

    storage: Storage
    prefix: str
    key: str


@attrs.frozen(eq=False)
class ConditionHandle:
    """Completion observed by calling ``done()``, for what is neither an invocation nor a
    storage key (e.g. a durable execution's checkpoint moving on).

    The poller calls ``done`` once per round, so it must be cheap and must not block.
    Handles compare by identity.
    """

    done: Callable[[], bool]


class Poller(Protocol):
    """Waits for many handles at once with adaptive backoff."""

    def wait(
        self,
        handles: Sequence[InvokeHandle | StorageHandle | ConditionHandle],
        *,
        timeout: float | None = None,
        return_when: str = "FIRST_COMPLETED",
    ) -> tuple[set[Any], set[Any]]:
        """Block until ``return_when`` (``FIRST_COMPLETED`` or ``ALL_COMPLETED``, as in
        :func:`concurrent.futures.wait`) or ``timeout``; return ``(done, not_done)``."""


# --- checkpointing ---------------------------------------------------------------------


@attrs.frozen
class Checkpoint:
    """A durable execution as stored.

    ``version`` grows by one with every successful write; writers pass the version they
    loaded as ``expected_version`` and get :class:`~lambdarun.errors.CheckpointConflictError`
    when someone else wrote first. ``state`` is the execution-level record (status, input,
    result, ...) and ``records`` the ordered operation records; both are JSON-compatible
    and their contents belong to the backend that writes them.
    """

    execution_id: str
    version: int
    state: Mapping[str, Any]
    records: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class Lease:
    """Who drives an execution: one holder at a time, until ``expires_at`` unless renewed.

    ``holder`` is an opaque id (lambdarun uses ``host/pid/random``); times are epoch
    seconds from the writer's clock (drivers on several hosts need synchronised clocks).
    """

    execution_id: str
    holder: str
    acquired_at: float
    expires_at: float
    heartbeat_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


class CheckpointStore(Protocol):
    """Durable execution state with optimistic concurrency, and a lease per execution.

    The lease is kept apart from the execution: taking, renewing or releasing it never
    changes the execution's ``version``. All lease writes are atomic compare-and-set
    operations, so of two drivers racing for one lease exactly one wins.
    """

    url: str

    def create(
        self,
        execution_id: str,
        state: Mapping[str, Any],
        records: Sequence[Mapping[str, Any]] = (),
    ) -> Checkpoint:
        """Create an execution at version 1 (with optional initial records, in the same
        write); conflict error if it already exists."""

    def load(self, execution_id: str) -> Checkpoint:
        """Load state and all records; raise :class:`~lambdarun.errors.ExecutionNotFoundError`."""

    def load_state(self, execution_id: str) -> Checkpoint:
        """Like :meth:`load` without the records (cheap, for describe and polling)."""

    def append(
        self,
        execution_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        expected_version: int,
        state: Mapping[str, Any] | None = None,
    ) -> int:
        """Append records (and optionally replace the state) atomically; return the new version."""

    def replace(
        self,
        execution_id: str,
        state: Mapping[str, Any],
        *,
        expected_version: int,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Replace the state (and, when given, all records) atomically; return the new version."""

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Checkpoint]:
        """Executions, newest first, without their records; filtered by ``state["status"]``."""

    def delete(self, execution_id: str) -> None:
        """Remove an execution and its records."""

    def acquire_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        """Take the execution's lease for ``ttl`` seconds if it is free, expired or already
        ``holder``'s (then it is renewed); else raise :class:`~lambdarun.errors.LeaseHeldError`
        carrying the current :class:`Lease`. Does not check that the execution exists."""

    def renew_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        """Extend ``holder``'s lease to now + ``ttl`` (the heartbeat); raise
        :class:`~lambdarun.errors.LeaseLostError` when ``holder`` no longer holds it."""

    def release_lease(self, execution_id: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it; otherwise do nothing."""

    def get_lease(self, execution_id: str) -> Lease | None:
        """The current lease (possibly expired), or None when nobody ever took one."""

    def close(self) -> None:
        """Release connections."""



# ---------------------------------------------------------------------------------------
# the local Lambda service's extensions (hook ``lambdarun_lambda_service_extensions``)
# ---------------------------------------------------------------------------------------

#: what a service extension answers: (HTTP status, body, headers); an AWS error carries
#: the ``X-Amzn-ErrorType`` header and AWS's JSON error body
ServiceReply = tuple[int, bytes, dict[str, str]]


@attrs.frozen
class RawInvokeResult:
    """The outcome of :meth:`LambdaServiceHost.invoke_raw`: the handler's response bytes,
    and ``function_error`` (``"Unhandled"``) when the invocation failed (an exception, a
    timeout, a dead process: the payload is then Lambda's ``errorType``/``errorMessage``)."""

    payload: bytes
    function_error: str | None = None
    executed_version: str = "$LATEST"


class LambdaServiceHost(Protocol):
    """What a local Lambda service offers its extensions (small on purpose)."""

    #: region and account of the service's ARNs
    region: str
    account: str
    #: a private (0700) folder of the service for the extension's own files; it outlives
    #: a restart when ``persistent``
    state_dir: Path
    persistent: bool

    def function_config(self, name: str, qualifier: str | None = None) -> dict[str, Any] | None:
        """The function's ``GetFunctionConfiguration`` document (with ``DurableConfig``
        when it has one), or None when there is no such function/qualifier."""
        ...

    def invoke_raw(self, name: str, qualifier: str | None, payload: bytes) -> RawInvokeResult:
        """Run the function's handler once with ``payload`` and wait for it, bypassing
        every extension's :meth:`LambdaServiceExtension.on_invoke` (so it never starts a
        new durable execution). Waits for capacity instead of throttling. Raises
        ``LookupError`` when the function is gone."""
        ...


class LambdaServiceExtension(Protocol):
    """An API family a plugin adds to the local Lambda service. Every request reaching it
    already passed the service's SigV4, Host and browser checks."""

    def route(self, method: str, path: str, query: Mapping[str, str], headers: Any,
              body: bytes) -> ServiceReply | None:
        """Answer a request of this extension's paths, or None (not mine)."""
        ...

    def on_invoke(self, function: Mapping[str, Any], qualifier: str | None, headers: Any,
                  body: bytes) -> ServiceReply | None:
        """Answer an ``Invoke`` of ``function`` (its configuration document) instead of the
        service, or None to let the service run it as usual."""
        ...

    def close(self) -> None:
        """Stop the extension's threads (the service is stopping)."""
        ...
