"""The service's data model: functions, invocations, queued Events, and the registry.

:class:`Registry` is the one owner of the functions by name and of the lock (and capacity
condition) that guards their scheduling state; every other module of the service takes it
rather than a reference to the service.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from lambdarun.local.options import ACCOUNT_ID, CANCELLED_ERROR, now_iso
from lambdarun.local.shapes import not_found

if TYPE_CHECKING:
    from lambdarun.local.records import InvocationRecord


class RunningEnvironment(Protocol):
    """What an invocation knows of the environment it was given (an
    :class:`~lambdarun.local.environment.Environment`): enough to stop it."""

    def write_log(self, text: str) -> None: ...

    def kill(self, reason: str | None = None) -> None: ...


@attrs.define(eq=False)
class Function:
    """One function (``$LATEST``): its configuration, and the scheduling and queue state the
    scheduler and the async queue keep on it under the registry's lock."""

    name: str
    handler: str
    runtime: str
    role: str
    timeout: int
    memory_size: int
    environment: dict[str, str]
    description: str
    code_dir: Path
    local_code: bool
    code_sha256: str
    code_size: int
    region: str
    tags: dict[str, str] = attrs.field(factory=dict)
    reserved: int | None = None
    generation: int = 0
    revision_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    last_modified: str = attrs.field(factory=now_iso)
    # scheduling state, guarded by the registry's lock
    busy: int = 0
    deleted: bool = False
    async_queue: collections.deque = attrs.field(factory=collections.deque)
    async_workers: int = 0
    event_invoke_config: dict[str, Any] | None = None
    #: ``DurableConfig`` (ExecutionTimeout, RetentionPeriodInDays): set at creation only
    durable_config: dict[str, Any] | None = None
    #: invocations carrying a stop marker, from acceptance to completion (see stop())
    inflight: set[Invocation] = attrs.field(factory=set)
    #: async events waiting for their retry timer
    retrying: set[AsyncEvent] = attrs.field(factory=set)
    #: "$LATEST", or the number of a published version (an immutable snapshot)
    version: str = "$LATEST"
    #: on $LATEST: its published versions by number, its aliases by name, the last number
    #: (see :mod:`.versions`; guarded by the registry's lock)
    versions: dict[str, Function] = attrs.field(factory=dict)
    aliases: dict[str, Any] = attrs.field(factory=dict)
    last_version: int = 0
    #: the interpreter its Runtime names, None for the service's own (see :mod:`.interpreters`)
    python: str | None = None
    #: on $LATEST: resource-policy statements by qualifier ("" for the function; see :mod:`.policy`)
    policies: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.name}"

    def configuration(self) -> dict[str, Any]:
        out = {
            "FunctionName": self.name,
            "FunctionArn": self.arn if self.version == "$LATEST" else f"{self.arn}:{self.version}",
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": self.last_modified,
            "CodeSha256": self.code_sha256,
            "Version": self.version,
            "Environment": {"Variables": dict(self.environment)},
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": self.revision_id,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["x86_64" if os.uname().machine != "aarch64" else "arm64"],
            "EphemeralStorage": {"Size": 512},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{self.name}"},
        }
        if self.durable_config is not None:
            out["DurableConfig"] = dict(self.durable_config)
        return out


class Invocation:
    """One invocation's rendezvous between the Invoke API thread and the Runtime API."""

    __slots__ = (
        "request_id", "payload", "client_context", "deadline_ms", "timeout", "started",
        "done", "result", "function_error", "log_start", "started_at", "_lock",
        "marker", "env", "cancelled", "record", "on_start", "invoked_arn",
    )

    def __init__(self, payload: bytes, client_context: str | None, timeout: int,
                 marker: str | None = None, record: InvocationRecord | None = None) -> None:
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.client_context = client_context
        #: ``custom.lambdarun_attempt`` of the client context: what stop() matches
        self.marker = marker
        #: the environment given this invocation (set before it is submitted)
        self.env: RunningEnvironment | None = None
        self.cancelled = False
        self.record = record
        #: called once an environment is reserved for it (before the handler gets it)
        self.on_start: Any = None
        #: the ARN it was invoked by (qualified by the alias or version named), if known
        self.invoked_arn: str | None = None
        self.timeout = timeout
        self.deadline_ms = 0
        self.started = threading.Event()
        self.done = threading.Event()
        self.result = b""
        self.function_error: str | None = None
        self.log_start = 0
        self.started_at = 0.0
        self._lock = threading.Lock()

    def finish(self, result: bytes, function_error: str | None = None) -> bool:
        """Record the outcome once; later outcomes (a late response, an exit) are ignored."""
        with self._lock:
            if self.done.is_set():
                return False
            self.result = result
            self.function_error = function_error
            self.started.set()
            self.done.set()
            return True

    def fail(self, error_type: str, message: str) -> bool:
        return self.finish(
            json.dumps({"errorType": error_type, "errorMessage": message}).encode(), "Unhandled"
        )

    def cancel(self, marker: str) -> bool:
        """Fail with ``Runtime.Cancelled`` (stopped through the extension API)."""
        self.cancelled = True
        message = (f"RequestId: {self.request_id} Error: Invocation stopped "
                   f"(lambdarun_attempt {marker}); its execution environment was killed")
        return self.finish(json.dumps({
            "errorMessage": message, "errorType": CANCELLED_ERROR,
            "requestId": self.request_id, "stackTrace": [],
        }).encode(), "Unhandled")


@attrs.define(eq=False)
class AsyncEvent:
    """An Event invocation waiting in its function's queue (kept across retries)."""

    payload: bytes
    client_context: str | None = None
    request_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    received: float = attrs.field(factory=time.time)
    attempts: int = 0
    marker: str | None = None
    cancelled: bool = False
    record: InvocationRecord | None = None


class Registry:
    """The functions by name, and the lock that guards them and their scheduling state.

    ``capacity`` (a condition on ``lock``) is notified whenever a slot frees or a limit
    changes; ``stopping`` is set once the service stops."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.lock = threading.RLock()
        self.capacity = threading.Condition(self.lock)
        self.functions: dict[str, Function] = {}
        self.stopping = threading.Event()

    def lookup(self, name: str, qualifier: str | None = None) -> Function:
        """``name``'s ``$LATEST``, or the version a qualifier names (a number, or an alias:
        its primary version; :meth:`route` applies the alias's weights)."""
        with self.lock:
            fn = self.functions.get(name)
            if fn is not None and qualifier not in (None, "", "$LATEST"):
                alias = fn.aliases.get(qualifier)
                target = alias.function_version if alias is not None else qualifier
                fn = fn if target == "$LATEST" else fn.versions.get(target)
        if fn is None:
            raise not_found(name if not qualifier else f"{name}:{qualifier}", self.region)
        return fn

    def route(self, name: str, qualifier: str | None = None) -> Function:
        """What an Invoke of ``name:qualifier`` runs: :meth:`lookup`, except that an alias
        with ``RoutingConfig`` picks one of its two versions by their weights."""
        with self.lock:
            fn = self.functions.get(name)
            alias = fn.aliases.get(qualifier) if fn is not None and qualifier else None
            if alias is not None:
                target = alias.pick_version()
                picked = fn if target == "$LATEST" else fn.versions.get(target)
                if picked is not None:
                    return picked
        return self.lookup(name, qualifier)

    def get(self, name: str) -> Function | None:
        with self.lock:
            return self.functions.get(name)

    def snapshot(self) -> list[Function]:
        """The functions, sorted by name."""
        with self.lock:
            return [self.functions[n] for n in sorted(self.functions)]
