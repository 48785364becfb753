"""The local Lambda service: the Lambda REST API on 127.0.0.1, running real handlers.

A plain ``boto3.client("lambda", endpoint_url=service.url)`` works against it. Functions run
in execution environments: one worker process per environment, one invocation at a time,
each with its own Lambda Runtime API endpoint (a port of this service) and the real
``awslambdaric`` client inside. See :class:`LambdaService`.

Code from a local directory (no upload, used in place)::

    lam.create_function(..., Code={"S3Bucket": "__local__", "S3Key": "/abs/dir"})

``"hot-reload"`` is accepted as the bucket name too (LocalStack's convention). Any other
``S3Bucket`` is fetched from the local S3 (moto) when the service knows its endpoint.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import structlog

from lambdarun.local import auth
from lambdarun.local._http import FastHandler, LoopbackServer
from lambdarun.local._sandbox import ISOLATED_FLAGS, SYS_PATH_VAR, build_runtime_dir
from lambdarun.local.persist import ServiceState, StoredEvent, remove_orphan_code
from lambdarun.private_files import private_dir

__all__ = [
    "ServiceOptions",
    "LambdaService",
    "LOCAL_CODE_BUCKETS",
    "ACCOUNT_ID",
    "LOCAL_ENDPOINTS_VAR",
    "SYNC_REQUEST_LIMIT",
    "ASYNC_REQUEST_LIMIT",
    "SYNC_RESPONSE_LIMIT",
]

log = structlog.get_logger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account, so ARNs agree across the stack
LOCAL_CODE_BUCKETS = frozenset({"__local__", "hot-reload"})
SYNC_REQUEST_LIMIT = 6_291_456
SYNC_RESPONSE_LIMIT = 6_291_556
ASYNC_REQUEST_LIMIT = 1_048_576
ZIP_UPLOAD_LIMIT = 50 * 1024 * 1024
#: Lambda's quota on a function's unzipped code (250 MB)
UNZIPPED_CODE_LIMIT = 262_144_000
#: largest CreateFunction / UpdateFunctionCode request (a base64 zip in JSON), as on AWS
CODE_REQUEST_LIMIT = 70_167_211
#: largest request of any other operation
OTHER_REQUEST_LIMIT = SYNC_REQUEST_LIMIT
LOG_TAIL_BYTES = 4096
INIT_TIMEOUT = 10.0  # Lambda's init phase limit
#: seconds an environment's supervisor gets to end its process tree before SIGKILL
KILL_GRACE = 5.0
#: errorType of an invocation stopped through ``POST /_lambdarun/functions/{name}/stop``
CANCELLED_ERROR = "Runtime.Cancelled"
RESPONSE_PREVIEW_BYTES = 4096
#: ``custom`` key of an Invoke's ClientContext that stop() matches
STOP_MARKER_KEY = "lambdarun_attempt"
#: set in every function's environment: the stack's endpoints as JSON
LOCAL_ENDPOINTS_VAR = "_LAMBDARUN_LOCAL_ENDPOINTS"
_BOOTSTRAP = str(Path(__file__).with_name("_bootstrap.py"))
_API = "/2015-03-31/functions"


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@attrs.frozen
class ServiceOptions:
    """How the local Lambda service behaves (all have defaults).

    :param state_dir: where extracted code (``functions/``) and logs (``logs/``) live.
    :param port: port of the Lambda API (0: a free one).
    :param region: region in ARNs and ``AWS_REGION``.
    :param max_concurrency: global concurrency limit (0: CPU count x 4).
    :param idle_timeout: seconds an idle environment is kept warm before it is reaped.
    :param async_retries: retries of an ``Event`` invocation after a function error.
    :param async_retry_delay: seconds between those attempts (Lambda: 60 s then 120 s).
    :param memory_limit: enforce ``MemorySize`` with ``RLIMIT_AS`` in the workers.
    :param memory_overhead_mb: address space granted on top of ``MemorySize`` (the
        interpreter and its shared libraries map ~100-300 MB of virtual memory that Lambda
        would not count as used memory).
    :param cloudwatch_logs: also ship each invocation's log lines to CloudWatch Logs in moto
        (group ``/aws/lambda/<name>``, the environment's stream), in the background, so
        ``logs.get_log_events``/``filter_log_events`` work. Needs a moto endpoint. Off by
        default: it costs ~30% of throughput on 2 cores (boto3 work in the service process).
    :param service_endpoints: ``AWS_ENDPOINT_URL_<SERVICE>`` values given to functions,
        e.g. ``{"S3": "http://127.0.0.1:5000"}``; the key ``""`` sets ``AWS_ENDPOINT_URL``.
    :param python: interpreter of the workers (default: this one, so this venv's
        packages are importable).
    :param record_limit: invocation records kept for ``GET /_lambdarun/invocations`` (the
        oldest are dropped beyond it).
    :param credentials: see :mod:`lambdarun.local.auth`.
    """

    state_dir: Path = attrs.field(converter=lambda p: Path(p).expanduser().resolve())
    port: int = 0
    region: str = "us-east-1"
    max_concurrency: int = 0
    idle_timeout: float = 300.0
    async_retries: int = 2
    async_retry_delay: float = 1.0
    memory_limit: bool = True
    memory_overhead_mb: int = 512
    cloudwatch_logs: bool = False
    service_endpoints: Mapping[str, str] = attrs.field(factory=dict)
    python: str = sys.executable
    record_limit: int = 10_000
    #: the only credentials the API accepts (SigV4); also every function's runtime
    #: credentials. Generated when not given; saved 0600 as ``state_dir/credentials.json``.
    credentials: auth.StackCredentials = attrs.field(factory=auth.StackCredentials.generate)

    @property
    def concurrency_limit(self) -> int:
        return self.max_concurrency or (os.cpu_count() or 1) * 4


class ApiError(Exception):
    """An AWS-shaped error response."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> bytes:
        doc = {"Type": "User", "Message": self.message, "message": self.message}
        doc.update(self.extra)
        return json.dumps(doc).encode()


def _not_found(name: str, region: str) -> ApiError:
    arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
    return ApiError(404, "ResourceNotFoundException", f"Function not found: {arn}")


class InvocationRecord:
    """What ``GET /_lambdarun/invocations`` shows of one invocation (one per Event, across
    its retries). Created when the invocation is accepted, updated in place as it runs; kept
    in a bounded deque, so recording costs an object and an append on the warm path."""

    __slots__ = (
        "seq", "request_id", "function", "type", "status", "started_at", "duration_ms",
        "billed_ms", "init_duration_ms", "error_type", "error_message", "error", "response",
        "log_path", "log_start", "attempts",
    )

    def __init__(self, seq: int, request_id: str, function: str, type_: str, status: str,
                 started_at: float) -> None:
        self.seq = seq
        self.request_id = request_id
        self.function = function
        self.type = type_
        self.status = status
        self.started_at = started_at
        self.duration_ms: float | None = None
        self.billed_ms: int | None = None
        self.init_duration_ms: float | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        #: the full error payload (function errors only)
        self.error: bytes | None = None
        #: the first RESPONSE_PREVIEW_BYTES of the response payload
        self.response: bytes | None = None
        self.log_path: Path | None = None
        self.log_start = 0
        self.attempts = 0

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "request_id": self.request_id,
            "function": self.function,
            "type": self.type,
            "status": self.status,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
            "billed_ms": self.billed_ms,
            "init_duration_ms": self.init_duration_ms,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
        }

    def detail(self) -> dict[str, Any]:
        out = self.summary()
        out["log"] = self.log_text()
        error: Any = None
        if self.error is not None:
            try:
                error = json.loads(self.error)
            except ValueError:
                error = self.error.decode("utf-8", "replace")
        out["error"] = error
        out["response_preview"] = (
            None if self.response is None else self.response.decode("utf-8", "replace")
        )
        return out

    def log_text(self) -> str:
        """This invocation's part of its environment's log file (START to REPORT), read up
        to its REPORT line only (the environment may have logged much more since)."""
        if self.log_path is None:
            return ""
        marker = f"REPORT RequestId: {self.request_id}".encode()
        data = b""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                while True:
                    chunk = f.read(65536)
                    if not chunk:
                        break
                    searched = max(0, len(data) - len(marker))
                    data += chunk
                    end = data.find(marker, searched)
                    if end >= 0:
                        newline = data.find(b"\n", end)
                        while newline < 0:  # the REPORT line continues in the next chunk
                            more = f.read(4096)
                            if not more:
                                break
                            data += more
                            newline = data.find(b"\n", end)
                        data = data[: newline + 1] if newline >= 0 else data
                        break
        except OSError:
            return ""
        return data.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------
# functions, invocations, environments
# ---------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Function:
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
    last_modified: str = attrs.field(factory=_now_iso)
    # scheduling state, guarded by the service lock
    idle: list[_Environment] = attrs.field(factory=list)
    busy: int = 0
    deleted: bool = False
    async_queue: collections.deque = attrs.field(factory=collections.deque)
    async_workers: int = 0
    event_invoke_config: dict[str, Any] | None = None
    #: invocations carrying a stop marker, from acceptance to completion (see stop())
    inflight: set[_Invocation] = attrs.field(factory=set)
    #: async events waiting for their retry timer
    retrying: set[_AsyncEvent] = attrs.field(factory=set)

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.name}"

    def configuration(self) -> dict[str, Any]:
        return {
            "FunctionName": self.name,
            "FunctionArn": self.arn,
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": self.last_modified,
            "CodeSha256": self.code_sha256,
            "Version": "$LATEST",
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


class _Invocation:
    """One invocation's rendezvous between the Invoke API thread and the Runtime API."""

    __slots__ = (
        "request_id", "payload", "client_context", "deadline_ms", "timeout", "started",
        "done", "result", "function_error", "log_start", "started_at", "_lock",
        "marker", "env", "cancelled", "record", "on_start",
    )

    def __init__(self, payload: bytes, client_context: str | None, timeout: int,
                 marker: str | None = None, record: InvocationRecord | None = None) -> None:
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.client_context = client_context
        #: ``custom.lambdarun_attempt`` of the client context: what stop() matches
        self.marker = marker
        #: the environment given this invocation (set before it is submitted)
        self.env: _Environment | None = None
        self.cancelled = False
        self.record = record
        #: called once an environment is reserved for it (before the handler gets it)
        self.on_start: Any = None
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
class _AsyncEvent:
    """An Event invocation waiting in its function's queue (kept across retries)."""

    payload: bytes
    client_context: str | None = None
    request_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    received: float = attrs.field(factory=time.time)
    attempts: int = 0
    marker: str | None = None
    cancelled: bool = False
    record: InvocationRecord | None = None


class _Environment:
    """One execution environment: a worker process and its Runtime API endpoint."""

    def __init__(self, service: LambdaService, fn: _Function) -> None:
        self.service = service
        self.function = fn
        self.generation = fn.generation
        self.id = uuid.uuid4().hex
        self.inbox: collections.deque[_Invocation] = collections.deque()
        self.inbox_ready = threading.Condition(threading.Lock())
        self.current: _Invocation | None = None
        self.initialized = threading.Event()
        self.init_error: bytes | None = None
        self.init_duration_ms: float | None = None
        self.init_reported = False
        self.dead = False
        self.exit_reason: str | None = None
        self.last_used = time.monotonic()
        day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
        self.log_stream = f"{day}/[$LATEST]{self.id}"
        log_dir = private_dir(service.options.state_dir / "logs" / fn.name)
        self.log_path = log_dir / f"{day.replace('/', '-')}-{self.id}.log"
        # 0600 from the start: logs hold the function's output, tracebacks, payloads
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.log_file = open(fd, "ab", buffering=0)  # noqa: SIM115 - closed by the service
        self.in_use = False
        self.runtime = LoopbackServer(_RuntimeHandler, self, name=f"runtime-{fn.name}")
        self.proc: subprocess.Popen[bytes] | None = None
        self._runtime_pid: int | None = None
        self.spawned_at = 0.0
        self.started_at = time.time()
        self.invocations = 0

    # -- process ---------------------------------------------------------------------

    def spawn(self) -> None:
        fn = self.function
        opts = self.service.options
        env = self.service.function_environment(fn, self)
        self.runtime.start()
        self.spawned_at = time.perf_counter()
        if fn.local_code:  # a directory used in place: this environment's packages too
            argv = [opts.python, _BOOTSTRAP, fn.handler]
        else:  # a zip: only its content and what Lambda's runtime provides
            argv = [opts.python, *ISOLATED_FLAGS, _BOOTSTRAP, fn.handler]
        self.proc = subprocess.Popen(
            argv,
            cwd=str(fn.code_dir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
        threading.Thread(target=self._monitor, name=f"env-monitor-{fn.name}", daemon=True).start()
        if self.dead or self.service._stopping.is_set():  # killed or stopped while spawning
            self.kill(self.exit_reason or "service stopped")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _monitor(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        # whatever the handler started in the environment's process group goes with it
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        reason = self.exit_reason or (
            f"signal: {signal.Signals(-code).name.lower().removeprefix('sig')}"
            if code < 0
            else f"exit status {code}"
        )
        if code < 0 and -code == signal.SIGKILL and not self.exit_reason:
            reason = "signal: killed"
        with self.inbox_ready:  # from here on submit() refuses new invocations
            self.dead = True
            pending = list(self.inbox)
            self.inbox.clear()
        self.initialized.set()
        inv = self.current if self.in_use else None
        for victim in ([inv] if inv else []) + pending:
            if victim.done.is_set():
                continue
            if self.init_error is not None:
                victim.finish(self.init_error, "Unhandled")
            else:
                message = f"RequestId: {victim.request_id} Error: Runtime exited with error: {reason}"
                self.write_log(f"{message}\nRuntime.ExitError\n")
                victim.fail("Runtime.ExitError", message)
        with self.inbox_ready:
            self.inbox_ready.notify_all()
        self.runtime.close()
        self.service._environment_died(self)

    def kill(self, reason: str | None = None) -> None:
        """Kill the worker and everything it started, ``setsid()`` children included.

        SIGKILL to the runtime and SIGTERM to the environment's supervisor (see
        ``_bootstrap.py``: a child subreaper that SIGKILLs every descendant, then exits with
        the runtime's status); should it not be gone
        within :data:`KILL_GRACE` seconds, SIGKILL to its whole process group."""
        if reason and not self.exit_reason:
            self.exit_reason = reason
        self.dead = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            runtime = self.runtime_pid()
            # the runtime at once (it may be burning CPU the next environment needs), then
            # the supervisor, which sweeps whatever else the handler started
            for pid, sig in ((runtime, signal.SIGKILL), (proc.pid, signal.SIGTERM)):
                if pid:
                    try:
                        os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass

            def force() -> None:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass

            timer = threading.Timer(KILL_GRACE, force)
            timer.daemon = True
            timer.start()
        with self.inbox_ready:
            self.inbox_ready.notify_all()

    def close_log(self) -> None:
        self.log_file.close()

    # -- invocations -----------------------------------------------------------------

    def submit(self, inv: _Invocation) -> None:
        with self.inbox_ready:
            if not (self.dead and self.proc is not None and self.proc.returncode is not None):
                self.inbox.append(inv)
                self.inbox_ready.notify()
                return
        # the worker exited between being picked and being given the event
        inv.fail("Runtime.ExitError",
                 f"RequestId: {inv.request_id} Error: Runtime exited with error: {self.exit_reason or 'exited'}")

    def next_invocation(self) -> _Invocation | None:
        """Block until an invocation is queued for this environment (Runtime API /next)."""
        if not self.initialized.is_set():
            self.init_duration_ms = (time.perf_counter() - self.spawned_at) * 1000
            self.initialized.set()
        with self.inbox_ready:
            while True:
                while not self.inbox and not self.dead:
                    self.inbox_ready.wait()
                if self.dead:
                    return None
                inv = self.inbox.popleft()
                if not inv.done.is_set():  # else stopped before the runtime asked for it
                    break
        self.invocations += 1
        self.current = inv
        inv.log_start = self.log_size()
        self.write_log(f"START RequestId: {inv.request_id} Version: $LATEST\n")
        inv.started_at = time.perf_counter()
        inv.deadline_ms = int(time.time() * 1000) + inv.timeout * 1000
        inv.started.set()
        return inv

    def write_log(self, text: str) -> None:
        try:
            self.log_file.write(text.encode("utf-8", "replace"))
        except (OSError, ValueError):
            pass

    def log_size(self) -> int:
        try:
            return os.fstat(self.log_file.fileno()).st_size
        except (OSError, ValueError):
            return 0

    def log_since(self, offset: int) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def is_runtime_connection(self, conn: Any) -> bool:
        """True when ``conn`` (accepted on this environment's Runtime API) comes from this
        environment's runtime process."""
        pid = self.runtime_pid()
        if pid is None:
            return False
        held = auth.peer_held_by(conn, pid)
        return True if held is None else held  # None: no /proc here, nothing to check with

    def runtime_pid(self) -> int | None:
        """Pid of the runtime (the supervisor's first child), found once."""
        if self._runtime_pid is None and self.pid:
            try:
                with open(f"/proc/{self.pid}/task/{self.pid}/children", "rb") as f:
                    first = f.read().split()[:1]
                self._runtime_pid = int(first[0]) if first else None
            except (OSError, ValueError):
                pass
        return self._runtime_pid

    def max_memory_mb(self) -> int:
        try:
            with open(f"/proc/{self.runtime_pid() or self.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        return math.ceil(int(line.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):
            pass
        return 0


class _LogShipper:
    """Ships invocation logs to CloudWatch Logs (moto) from one background thread, in batches."""

    def __init__(self, client_factory: Any) -> None:
        self._client_factory = client_factory
        self._pending: list[tuple[str, str, int, bytes]] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._known: set[tuple[str, str]] = set()
        self._thread = threading.Thread(target=self._loop, name="lambda-log-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, function: str, stream: str, text: bytes) -> None:
        with self._cond:
            self._pending.append((f"/aws/lambda/{function}", stream, int(time.time() * 1000), text))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped and not self._pending:
                    return
            time.sleep(0.1)  # let a burst accumulate into one call per stream
            with self._cond:
                batch, self._pending = self._pending, []
            try:
                self._ship(batch)
            except Exception as e:  # moto gone (shutting down) or a bug: logs stay on disk
                log.debug("could not ship logs to CloudWatch Logs", error=f"{type(e).__name__}: {e}")

    def _ship(self, batch: list[tuple[str, str, int, bytes]]) -> None:
        client = self._client_factory()
        streams: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for group, stream, ts, text in batch:
            events = streams.setdefault((group, stream), [])
            for line in text.decode("utf-8", "replace").splitlines():
                if line:
                    events.append({"timestamp": ts, "message": line})
        for (group, stream), events in streams.items():
            if not events:
                continue
            if (group, stream) not in self._known:
                for call, kwargs in (
                    (client.create_log_group, {"logGroupName": group}),
                    (client.create_log_stream, {"logGroupName": group, "logStreamName": stream}),
                ):
                    try:
                        call(**kwargs)
                    except client.exceptions.ResourceAlreadyExistsException:
                        pass
                self._known.add((group, stream))
            for i in range(0, len(events), 5000):
                client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events[i:i + 5000])


# ---------------------------------------------------------------------------------------
# the Runtime API (one endpoint per environment)
# ---------------------------------------------------------------------------------------

_RUNTIME_PREFIX = "/2018-06-01/runtime/"


class _RuntimeHandler(FastHandler):
    """One environment's Runtime API. Only its own runtime client talks to it: a connection
    from any other process (checked once per connection: the peer socket must be held by the
    environment's runtime process), browsers (``Origin``/``Sec-Fetch-*``, preflights) and
    other Host names are refused; it answers on 127.0.0.1 only."""

    server_version = "lambdarun-local-runtime"

    _peer_ok: bool | None = None

    def _refused(self) -> bool:
        env: _Environment = self.server.app
        marker = auth.browser_marker(self.headers.get)
        host = self.headers.get("Host")
        if self._peer_ok is None:  # once per connection (the runtime client keeps one alive)
            self._peer_ok = env.is_runtime_connection(self.connection)
        if (self._peer_ok and marker is None and self.command != "OPTIONS"
                and (host is None or host == env.runtime.address)):
            return False
        log.warning("runtime API refused a request", function=env.function.name,
                    header=marker, host=host, method=self.command, own_runtime=self._peer_ok)
        self.close_connection = True
        self.reply(403, b'{"errorMessage":"refused","errorType":"AccessDenied"}')
        self.discard_input()
        return True

    def do_OPTIONS(self) -> None:
        self._refused()

    def do_GET(self) -> None:
        env: _Environment = self.server.app
        if self._refused():
            return
        if self.path != _RUNTIME_PREFIX + "invocation/next":
            self.reply(404, b'{"errorMessage":"not found","errorType":"InvalidRequest"}')
            return
        inv = env.next_invocation()
        if inv is None:  # the environment is shutting down
            self.close_connection = True
            self.reply(500, b'{"errorMessage":"environment stopped","errorType":"Shutdown"}')
            return
        fn = env.function
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": fn.arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{inv.request_id.replace('-', '')[:24]};Sampled=0",
        }
        if inv.client_context:
            headers["Lambda-Runtime-Client-Context"] = inv.client_context
        self.reply(200, inv.payload, headers)

    def do_POST(self) -> None:
        env: _Environment = self.server.app
        if self._refused():
            return
        path = self.path
        try:
            body = self.read_body(SYNC_RESPONSE_LIMIT)
        except OverflowError:
            inv = env.current
            if inv is not None and path.endswith(f"/{inv.request_id}/response"):
                inv.fail(
                    "Function.ResponseSizeTooLarge",
                    f"Response payload size exceeded maximum allowed payload size ({SYNC_RESPONSE_LIMIT} bytes).",
                )
            self.reply(413, b'{"errorMessage":"payload too large","errorType":"RequestEntityTooLarge"}')
            self.discard_input()
            return
        except ValueError:
            self.reply(400, b'{"errorMessage":"bad Content-Length","errorType":"InvalidRequest"}')
            self.discard_input()
            return
        if path == _RUNTIME_PREFIX + "init/error":
            env.init_error = _normalise_error(body, self.headers, "")
            env.initialized.set()
            self.reply(202, b'{"status":"OK"}')
            return
        if path.startswith(_RUNTIME_PREFIX + "invocation/"):
            rest = path[len(_RUNTIME_PREFIX + "invocation/") :]
            request_id, _, kind = rest.partition("/")
            inv = env.current
            if inv is None or inv.request_id != request_id:
                self.reply(400, b'{"errorMessage":"unknown request id","errorType":"InvalidRequestID"}')
                return
            if kind == "response":
                if len(body) > SYNC_RESPONSE_LIMIT:
                    inv.fail(
                        "Function.ResponseSizeTooLarge",
                        f"Response payload size exceeded maximum allowed payload size ({SYNC_RESPONSE_LIMIT} bytes).",
                    )
                    self.reply(413, b'{"errorMessage":"payload too large","errorType":"RequestEntityTooLarge"}')
                    return
                inv.finish(body)
                self.reply(202, b'{"status":"OK"}')
                return
            if kind == "error":
                inv.finish(_normalise_error(body, self.headers, request_id), "Unhandled")
                self.reply(202, b'{"status":"OK"}')
                return
        self.reply(404, b'{"errorMessage":"not found","errorType":"InvalidRequest"}')


def _normalise_error(body: bytes, headers: Any, request_id: str) -> bytes:
    """The error document a client sees: ``errorMessage, errorType, requestId, stackTrace``."""
    try:
        doc = json.loads(body or b"{}")
        if not isinstance(doc, dict):
            raise ValueError
    except ValueError:
        doc = {"errorMessage": body.decode("utf-8", "replace")}
    doc.setdefault("errorMessage", "")
    doc.setdefault("errorType", headers.get("Lambda-Runtime-Function-Error-Type") or "")
    doc.setdefault("requestId", request_id)
    doc.setdefault("stackTrace", [])
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------------------
# the Lambda REST API
# ---------------------------------------------------------------------------------------


class _ApiHandler(FastHandler):
    server_version = "lambdarun-local-lambda"

    def _refuse(self, err: ApiError, *, close: bool = True) -> None:
        # the body may be unread: never take it for the next request
        self.close_connection = self.close_connection or close
        self.reply(err.status, err.body(), {"X-Amzn-ErrorType": err.code,
                                            "x-amzn-RequestId": str(uuid.uuid4())})
        if close:
            self.discard_input()

    def _dispatch(self, method: str) -> None:
        service: LambdaService = self.server.app
        marker = auth.browser_marker(self.headers.get)
        if marker is not None or method == "OPTIONS":
            # a web page must never reach this API (CORS "simple" requests need no preflight)
            log.warning("local lambda API refused a browser request", header=marker or "OPTIONS")
            self._refuse(ApiError(403, "AccessDeniedException",
                                  "Refused: a browser request; the local Lambda API answers "
                                  "signed API calls only."))
            return
        host = self.headers.get("Host")
        if host is not None and host not in service.allowed_hosts:
            # DNS rebinding: a web page must not reach this API through a name of its own
            log.warning("local lambda API refused a request for another host", host=host)
            self._refuse(ApiError(403, "AccessDeniedException",
                                  f"Host {host!r} refused: address this service as {service.url}"))
            return
        split = urlsplit(self.path)
        try:
            authz = service.verifier.authorization(self.headers.get("Authorization"), split.query)
        except auth.AuthFailure as failure:
            self._refuse(_auth_error(failure))
            return
        limit, operation = _request_limit(method, split.path, self.headers)
        try:
            if method in ("POST", "PUT") and self.headers.get("Content-Length") is None and \
                    "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
                raise ValueError("Content-Length is required")
            body = self.read_body(limit)
        except OverflowError:
            self._refuse(ApiError(413, "RequestEntityTooLargeException",
                                  f"Request must be smaller than {limit} bytes for the {operation} operation"))
            return
        except ValueError as e:
            self._refuse(ApiError(400, "InvalidRequestContentException", f"Invalid request body: {e}"))
            return
        try:
            service.verifier.verify(authz, method, self.path, self.headers.items(), body)
        except auth.AuthFailure as failure:
            self._refuse(_auth_error(failure), close=False)
            return
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            status, payload, headers = service.route(method, split.path, query, self.headers, body,
                                                     raw_query=split.query)
        except ApiError as e:
            headers = {"X-Amzn-ErrorType": e.code, "x-amzn-RequestId": str(uuid.uuid4())}
            if e.status == 429:
                headers["Retry-After"] = "1"
            self.reply(e.status, e.body(), headers)
            return
        except (TypeError, ValueError, AttributeError) as e:
            # a field of the wrong type or shape that no specific check caught
            log.warning("local lambda API refused a malformed request", path=split.path,
                        error=f"{type(e).__name__}: {e}")
            self._refuse(ApiError(400, "InvalidParameterValueException",
                                  f"A request field has the wrong type or shape: {e}"), close=False)
            return
        except Exception as e:  # pragma: no cover - report bugs as AWS ServiceException
            log.exception("local lambda API error", path=self.path)
            err = ApiError(500, "ServiceException", f"{type(e).__name__}: {e}")
            self.reply(500, err.body(), {"X-Amzn-ErrorType": err.code})
            return
        self.reply(status, payload, headers)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:  # a CORS preflight: refused, no CORS headers
        self._dispatch("OPTIONS")


def _auth_error(failure: auth.AuthFailure) -> ApiError:
    """A refused signature as Lambda answers it (403)."""
    if failure.kind in ("missing", "unknown_key"):
        return ApiError(403, "UnrecognizedClientException",
                        "The security token included in the request is invalid.")
    return ApiError(403, "InvalidSignatureException", failure.message)


def _request_limit(method: str, path: str, headers: Any) -> tuple[int, str]:
    """(largest body, operation name) of a request, known before its body is read."""
    if path.startswith(_API):
        rest = path[len(_API):].strip("/")
        if method == "POST" and rest.endswith("/invocations"):
            if (headers.get("X-Amz-Invocation-Type") or "") == "Event":
                return ASYNC_REQUEST_LIMIT, "InvokeAsync"
            return SYNC_REQUEST_LIMIT, "InvokeFunction"
        if method == "POST" and not rest:
            return CODE_REQUEST_LIMIT, "CreateFunction"
        if method == "PUT" and rest.endswith("/code"):
            return CODE_REQUEST_LIMIT, "UpdateFunctionCode"
    return OTHER_REQUEST_LIMIT, f"{method} {path.split('?', 1)[0][:100]}"


def _function_name(raw: str) -> tuple[str, str | None]:
    """Name and qualifier from a name, a partial ARN or a full ARN (optionally ``:qualifier``)."""
    raw = unquote(raw)
    qualifier = None
    if ":function:" in raw:
        raw = raw.split(":function:", 1)[1]
    if ":" in raw:
        raw, qualifier = raw.split(":", 1)
    return raw, qualifier


class LambdaService:
    """The local Lambda service (the Lambda REST API plus execution environments).

    ``LambdaService(options).start()``; :attr:`url` is the endpoint for
    ``boto3.client("lambda", endpoint_url=...)``. :meth:`stop` kills every environment.
    """

    def __init__(self, options: ServiceOptions, state: ServiceState | None = None) -> None:
        self.options = options
        #: where functions and queued Events are kept across restarts (None: memory only)
        self._state = state
        self._lock = threading.RLock()
        self._capacity = threading.Condition(self._lock)
        self._functions: dict[str, _Function] = {}
        self._environments: set[_Environment] = set()
        self._busy_total = 0
        self._timers: set[threading.Timer] = set()
        self._clients: dict[str, Any] = {}
        self._shipper: _LogShipper | None = None
        self._stopping = threading.Event()
        self._server: LoopbackServer | None = None
        self._reaper: threading.Thread | None = None
        self._runtime_dir: Path | None = None
        #: Host headers the API answers (requests without one are answered too)
        self.allowed_hosts: frozenset[str] = frozenset()
        self._records: collections.deque[InvocationRecord] = collections.deque(maxlen=options.record_limit)
        self._seq = itertools.count(1)
        #: checks every API request's signature against ``options.credentials``
        self.verifier = auth.SigV4Verifier(options.credentials)
        private_dir(options.state_dir)
        private_dir(options.state_dir / "functions")
        private_dir(options.state_dir / "logs")
        options.credentials.save(options.state_dir / auth.CREDENTIALS_FILE)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LambdaService:
        if self._state is not None:
            self._restore_functions()
        self._server = LoopbackServer(_ApiHandler, self, port=self.options.port, name="lambda-api")
        port = self._server.port
        self.allowed_hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
        if self._state is not None:
            self._restore_events()
        self._server.start()
        self._reaper = threading.Thread(target=self._reap_loop, name="lambda-reaper", daemon=True)
        self._reaper.start()
        if self.options.cloudwatch_logs and (
            self.options.service_endpoints.get("LOGS") or self.options.service_endpoints.get("")
        ):
            self._shipper = _LogShipper(lambda: self._aws_client("logs"))
            self._shipper.start()
        log.debug("local lambda service started", url=self.url)
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LambdaService.start() first")
        return self._server.url

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    def stop(self) -> None:
        """Stop serving and kill every environment; waits until their processes are gone."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        with self._lock:
            envs = list(self._environments)
            timers = list(self._timers)
            dropped = sum(len(f.async_queue) for f in self._functions.values())
            for f in self._functions.values():
                f.async_queue.clear()
            self._capacity.notify_all()
        for t in timers:
            t.cancel()
        if self._shipper is not None:
            self._shipper.stop()
        if dropped and self._state is None:
            log.warning("local lambda stopped with queued async events dropped", count=dropped)
        elif dropped:
            log.info("local lambda stopped; queued async events kept for the next start", count=dropped)
        for env in envs:
            env.kill("service stopped")
        for env in envs:
            if env.proc is not None:
                try:
                    env.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    pass
            env.runtime.close()
            env.close_log()
        if self._state is not None:
            self._state.close()

    def runtime_dir(self) -> Path:
        """This service's directory of the packages Lambda's runtime provides (zip functions
        see only these besides their own code and the stdlib; see :mod:`._sandbox`)."""
        with self._lock:
            if self._runtime_dir is None:
                self._runtime_dir = build_runtime_dir(self.options.state_dir / "runtime")
            return self._runtime_dir

    def environment_pids(self) -> list[int]:
        with self._lock:
            return [e.pid for e in self._environments if e.pid and not e.dead]

    # -- environment variables of a function ----------------------------------------

    def function_environment(self, fn: _Function, env: _Environment) -> dict[str, str]:
        opts = self.options
        base = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT", "LD_LIBRARY_PATH", "VIRTUAL_ENV")
        }
        pythonpath = [str(fn.code_dir)]
        user = dict(fn.environment)
        if user.get("PYTHONPATH"):
            pythonpath.append(user.pop("PYTHONPATH"))
        out = {
            **base,
            "LANG": base.get("LANG", "en_US.UTF-8"),
            "TZ": ":UTC",
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": "/tmp",
            # the stack's own credentials, as Lambda injects the role's: a local function
            # never sees the user's real ones, and they are all the local stack accepts
            **opts.credentials.environment(),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_REGION": opts.region,
            "AWS_DEFAULT_REGION": opts.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": env.log_stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_RUNTIME_API": env.runtime.address,
            "LAMBDA_TASK_ROOT": str(fn.code_dir),
            "LAMBDA_RUNTIME_DIR": str(Path(_BOOTSTRAP).parent),
            "_HANDLER": fn.handler,
            "AWS_ENDPOINT_URL_LAMBDA": self.url,
        }
        for service, url in opts.service_endpoints.items():
            key = f"AWS_ENDPOINT_URL_{service.upper()}" if service else "AWS_ENDPOINT_URL"
            out[key] = url
        # lets lambdarun's own `local` target inside the function attach to this stack
        # instead of starting another one (see lambdarun.local.plugin)
        out[LOCAL_ENDPOINTS_VAR] = json.dumps({
            "lambda": self.url,
            "moto": opts.service_endpoints.get("") or opts.service_endpoints.get("S3", ""),
            "region": opts.region,
        })
        out.update(user)
        if not fn.local_code:
            # -I ignores PYTHONPATH: _bootstrap.py builds sys.path from this instead
            out[SYS_PATH_VAR] = os.pathsep.join([*pythonpath, str(self.runtime_dir())])
        if opts.memory_limit:
            # glibc reserves up to 64 MB of address space per thread arena: cap the arenas so
            # a threaded handler is not refused memory it never uses
            out.setdefault("MALLOC_ARENA_MAX", "2")
            out["_LAMBDARUN_LOCAL_RLIMIT_AS"] = str(
                (fn.memory_size + opts.memory_overhead_mb) * 1024 * 1024
            )
        return out

    # -- scheduling -----------------------------------------------------------------

    def _throttle_reason(self, fn: _Function) -> str | None:
        if fn.reserved is not None and fn.busy >= fn.reserved:
            return "ReservedFunctionConcurrentInvocationLimitExceeded"
        if self._busy_total >= self.options.concurrency_limit:
            return "ConcurrentInvocationLimitExceeded"
        return None

    def _acquire(self, fn: _Function, *, wait: bool) -> _Environment:
        """Reserve a slot and an environment (warm if one is idle, else a new one)."""
        evict: list[_Environment] = []
        with self._capacity:
            while True:
                if self._stopping.is_set() or fn.deleted:
                    raise ApiError(409, "ResourceConflictException", "The function is being deleted or the service is stopping.")
                reason = self._throttle_reason(fn)
                if reason is None:
                    break
                if not wait:
                    raise ApiError(429, "TooManyRequestsException", "Rate Exceeded.", Reason=reason)
                self._capacity.wait(1.0)
            fn.busy += 1
            self._busy_total += 1
            env = None
            while fn.idle:
                candidate = fn.idle.pop()  # most recently used first, like Lambda
                if not candidate.dead and candidate.generation == fn.generation:
                    env = candidate
                    env.in_use = True
                    break
                evict.append(candidate)
            if env is None:
                live = sum(1 for e in self._environments if not e.dead) - len(evict)
                if live >= self.options.concurrency_limit:
                    oldest = self._oldest_idle()
                    if oldest is not None:
                        oldest.function.idle.remove(oldest)
                        evict.append(oldest)
        for e in evict:
            e.kill("evicted")
        if env is None:
            try:
                env = _Environment(self, fn)
                env.in_use = True
                with self._lock:
                    self._environments.add(env)
                env.spawn()
            except Exception:
                self._release_slot(fn)
                raise
        return env

    def _oldest_idle(self) -> _Environment | None:
        idle = [e for f in self._functions.values() for e in f.idle if not e.dead]
        return min(idle, key=lambda e: e.last_used) if idle else None

    def _release_slot(self, fn: _Function) -> None:
        with self._capacity:
            fn.busy -= 1
            self._busy_total -= 1
            self._capacity.notify_all()

    def _release(self, fn: _Function, env: _Environment) -> None:
        retire = False
        with self._capacity:
            fn.busy -= 1
            self._busy_total -= 1
            env.current = None
            env.in_use = False
            env.last_used = time.monotonic()
            if env.dead:
                if env.proc is None or env.proc.returncode is not None:
                    env.close_log()
            elif fn.deleted or env.generation != fn.generation or self._stopping.is_set():
                retire = True
            else:
                fn.idle.append(env)
            self._capacity.notify_all()
        if retire:
            env.kill("retired")

    def _environment_died(self, env: _Environment) -> None:
        with self._lock:
            self._environments.discard(env)
            if env in env.function.idle:
                env.function.idle.remove(env)
            if not env.in_use:
                env.close_log()

    def _reap_loop(self) -> None:
        idle_timeout = self.options.idle_timeout
        interval = max(0.05, min(1.0, idle_timeout / 4))
        while not self._stopping.wait(interval):
            cutoff = time.monotonic() - idle_timeout
            victims = []
            with self._lock:
                for fn in self._functions.values():
                    for env in list(fn.idle):
                        if env.last_used < cutoff:
                            fn.idle.remove(env)
                            victims.append(env)
            for env in victims:
                env.kill("idle")

    # -- running one invocation -------------------------------------------------------

    def _run(self, fn: _Function, inv: _Invocation, *,
             wait: bool) -> tuple[_Environment | None, bool]:
        """Run ``inv`` to completion on an environment of ``fn``; returns (env, cold).

        env is None when ``inv`` was stopped before it got one."""
        if inv.marker is not None:
            with self._lock:
                fn.inflight.add(inv)
        try:
            if inv.done.is_set():  # stopped before it started
                self._record_outcome(inv, None)
                return None, False
            env = self._acquire(fn, wait=wait)
        except BaseException:
            self._forget(fn, inv)
            raise
        if inv.on_start is not None:
            inv.on_start()
        cold = not env.initialized.is_set()
        rec = inv.record
        if rec is not None and rec.status != "running":  # an Event leaving the queue
            rec.status, rec.started_at = "running", time.time()
            rec.attempts += 1
        try:
            inv.env = env  # before the check below: stop() kills it from now on
            if not inv.done.is_set():
                env.submit(inv)
            if not inv.started.wait(INIT_TIMEOUT if cold else INIT_TIMEOUT):
                env.kill("init timeout")
                inv.fail(
                    "Runtime.ExitError",
                    f"RequestId: {inv.request_id} Error: Init timed out after {INIT_TIMEOUT:.2f} seconds",
                )
            if not inv.done.wait(fn.timeout):
                # the deadline counts from when the runtime took the event
                remaining = inv.started_at + fn.timeout - time.perf_counter()
                if remaining > 0:
                    inv.done.wait(remaining)
            if not inv.done.is_set():
                message = f"RequestId: {inv.request_id} Error: Task timed out after {fn.timeout:.2f} seconds"
                if inv.fail("Sandbox.Timedout", message):
                    env.write_log(
                        f"{_now_iso()} {inv.request_id} Task timed out after {fn.timeout:.2f} seconds\n"
                    )
                    env.kill("timeout")
            self._report(env, inv, cold)
        finally:
            self._forget(fn, inv)
            self._release(fn, env)
        return env, cold

    def _forget(self, fn: _Function, inv: _Invocation) -> None:
        if inv.marker is not None:
            with self._lock:
                fn.inflight.discard(inv)

    def _report(self, env: _Environment, inv: _Invocation, cold: bool) -> None:
        if not inv.started_at:  # never reached the handler (init failure, early exit)
            inv.log_start = inv.log_start or env.log_size()
            env.write_log(f"START RequestId: {inv.request_id} Version: $LATEST\n")
            inv.started_at = time.perf_counter()
        duration = (time.perf_counter() - inv.started_at) * 1000
        parts = [
            f"REPORT RequestId: {inv.request_id}",
            f"Duration: {duration:.2f} ms",
            f"Billed Duration: {max(1, math.ceil(duration))} ms",
            f"Memory Size: {env.function.memory_size} MB",
            f"Max Memory Used: {env.max_memory_mb()} MB",
        ]
        init_ms = None
        if cold and not env.init_reported and env.init_duration_ms is not None:
            init_ms = env.init_duration_ms
            parts.append(f"Init Duration: {init_ms:.2f} ms")
            env.init_reported = True
        if inv.function_error and b"Sandbox.Timedout" in inv.result[:64]:
            parts.append("Status: timeout")
        elif inv.function_error and env.dead:
            parts.append("Status: error")
        env.write_log(f"END RequestId: {inv.request_id}\n" + "\t".join(parts) + "\t\n")
        rec = inv.record
        if rec is not None:
            rec.duration_ms = round(duration, 2)
            rec.billed_ms = max(1, math.ceil(duration))
            rec.init_duration_ms = None if init_ms is None else round(init_ms, 2)
            rec.log_path = env.log_path
            rec.log_start = inv.log_start
            self._record_outcome(inv, env)
        if self._shipper is not None:
            self._shipper.add(env.function.name, env.log_stream, env.log_since(inv.log_start))

    # -- invocation records (GET /_lambdarun/invocations) ---------------------------------

    def _record(self, request_id: str, function: str, type_: str, status: str) -> InvocationRecord:
        rec = InvocationRecord(next(self._seq), request_id, function, type_, status, time.time())
        self._records.append(rec)  # a bounded deque: the oldest record drops out
        return rec

    def _record_outcome(self, inv: _Invocation, env: _Environment | None) -> None:
        """Status, error and response preview of ``inv``'s record once it is done."""
        rec = inv.record
        if rec is None:
            return
        rec.response = inv.result[:RESPONSE_PREVIEW_BYTES]
        if inv.function_error is None:
            rec.status = "succeeded"
            rec.error_type = rec.error_message = None
            rec.error = None
            return
        rec.error = inv.result
        try:
            doc = json.loads(inv.result)
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        rec.error_type = str(doc.get("errorType") or "") or None
        rec.error_message = str(doc.get("errorMessage") or "") or None
        if rec.error_type == "Sandbox.Timedout":
            rec.status = "timeout"
        elif rec.error_type == "Runtime.ExitError":
            rec.status = "crashed"
        else:  # handled errors, init errors, Runtime.Cancelled
            rec.status = "failed"

    def records(self) -> list[InvocationRecord]:
        """The kept invocation records, oldest first (a snapshot)."""
        return list(self._records)

    # -- async invocations -------------------------------------------------------------

    def _enqueue_async(self, fn: _Function, event: _AsyncEvent) -> str:
        if event.record is None:
            event.record = self._record(event.request_id, fn.name, "Event", "queued")
        else:
            event.record.status = "queued"
        if self._state is not None and not fn.deleted:
            self._keep_event(fn, event, running=False)  # before 202: accepted means kept
        with self._lock:
            if fn.deleted or self._stopping.is_set():
                return event.request_id
            fn.async_queue.append(event)
            limit = fn.reserved if fn.reserved is not None else self.options.concurrency_limit
            if fn.async_workers < min(limit, len(fn.async_queue)) or fn.async_workers == 0:
                fn.async_workers += 1
                threading.Thread(
                    target=self._async_worker, args=(fn,), name=f"async-{fn.name}", daemon=True
                ).start()
        return event.request_id

    def _async_worker(self, fn: _Function) -> None:
        try:
            while True:
                config = fn.event_invoke_config or {}
                max_age = config.get("MaximumEventAgeInSeconds")
                inv = None
                with self._lock:
                    if not fn.async_queue or self._stopping.is_set():
                        return
                    event = fn.async_queue.popleft()
                    if max_age is None or time.time() - event.received <= max_age:
                        event.attempts += 1
                        inv = _Invocation(event.payload, event.client_context, fn.timeout,
                                          event.marker, event.record)
                        inv.request_id = event.request_id
                        if inv.marker is not None:  # stop() finds it from here on
                            fn.inflight.add(inv)
                rec = event.record
                if inv is None:
                    if rec is not None:
                        rec.status, rec.error_type = "failed", "EventAgeExceeded"
                        rec.error_message = f"Event older than MaximumEventAgeInSeconds ({max_age} s)"
                    self._async_failed(fn, event, None, "EventAgeExceeded")
                    self._forget_events([event.request_id])
                    continue
                if self._state is not None and inv is not None:
                    # from when it has an environment, this attempt counts even if the service dies
                    inv.on_start = lambda fn=fn, event=event: self._keep_event(fn, event, running=True)
                try:
                    self._run(fn, inv, wait=True)
                except ApiError:  # function deleted or service stopping
                    if fn.deleted:
                        self._forget_events([event.request_id])
                    return
                if self._stopping.is_set() and self._state is not None:
                    return  # killed by the stop: kept, retried after the next start
                if inv.cancelled:  # stopped through the extension API: no retry, no destination
                    log.info("async invocation stopped", function=fn.name, request_id=event.request_id)
                    self._forget_events([event.request_id])
                    continue
                if inv.function_error is None:
                    self._forget_events([event.request_id])
                    self._async_succeeded(fn, event, inv)
                    continue
                retries = config.get("MaximumRetryAttempts", self.options.async_retries)
                if event.attempts <= retries and not fn.deleted:
                    log.info("async invocation failed, retrying", function=fn.name,
                             request_id=event.request_id, attempt=event.attempts)
                    if rec is not None:
                        rec.status = "queued"  # keeps the failed attempt's error until the next
                    self._schedule_retry(fn, event)
                else:
                    self._forget_events([event.request_id])
                    self._async_failed(fn, event, inv, "RetriesExhausted")
        finally:
            with self._lock:
                fn.async_workers -= 1
                requeue = bool(fn.async_queue) and fn.async_workers == 0 and not self._stopping.is_set()
                if requeue:  # an event arrived while this worker was leaving
                    fn.async_workers += 1
            if requeue:
                threading.Thread(target=self._async_worker, args=(fn,), daemon=True).start()

    def _schedule_retry(self, fn: _Function, event: _AsyncEvent) -> None:
        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
                fn.retrying.discard(event)
                if event.cancelled or self._stopping.is_set():
                    return
            self._enqueue_async(fn, event)

        timer = threading.Timer(self.options.async_retry_delay, fire)
        timer.daemon = True
        with self._lock:
            if self._stopping.is_set():
                return
            self._timers.add(timer)
            fn.retrying.add(event)
        timer.start()

    def _destination_record(self, fn: _Function, event: _AsyncEvent, inv: _Invocation | None,
                            condition: str) -> dict[str, Any]:
        """The record Lambda sends to an on-success / on-failure destination."""
        try:
            request_payload = json.loads(event.payload)
        except ValueError:
            request_payload = event.payload.decode("utf-8", "replace")
        record: dict[str, Any] = {
            "version": "1.0",
            "timestamp": _now_iso(),
            "requestContext": {
                "requestId": event.request_id,
                "functionArn": f"{fn.arn}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": event.attempts,
            },
            "requestPayload": request_payload,
        }
        if inv is not None:
            record["responseContext"] = {"statusCode": 200, "executedVersion": "$LATEST"}
            if inv.function_error:
                record["responseContext"]["functionError"] = inv.function_error
            try:
                record["responsePayload"] = json.loads(inv.result) if inv.result else None
            except ValueError:
                record["responsePayload"] = inv.result.decode("utf-8", "replace")
        return record

    def _async_succeeded(self, fn: _Function, event: _AsyncEvent, inv: _Invocation) -> None:
        dest = ((fn.event_invoke_config or {}).get("DestinationConfig") or {}).get("OnSuccess") or {}
        if dest.get("Destination"):
            self._send_to_destination(fn, dest["Destination"],
                                      self._destination_record(fn, event, inv, "Success"))

    def _async_failed(self, fn: _Function, event: _AsyncEvent, inv: _Invocation | None,
                      condition: str) -> None:
        record = self._destination_record(fn, event, inv, condition)
        log.warning("async invocation failed", function=fn.name, request_id=event.request_id,
                    attempts=event.attempts, condition=condition)
        path = private_dir(self.options.state_dir / "logs" / fn.name) / "async-failures.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        dest = ((fn.event_invoke_config or {}).get("DestinationConfig") or {}).get("OnFailure") or {}
        if dest.get("Destination"):
            self._send_to_destination(fn, dest["Destination"], record)

    def _send_to_destination(self, fn: _Function, arn: str, record: dict[str, Any]) -> None:
        """Deliver a destination record: another local function (async) or an SQS queue (moto)."""
        try:
            if ":lambda:" in arn:
                name, _ = _function_name(arn)
                with self._lock:
                    target = self._functions.get(name)
                if target is None:
                    raise LookupError(f"destination function {name!r} does not exist")
                self._enqueue_async(target, _AsyncEvent(payload=json.dumps(record).encode()))
            elif ":sqs:" in arn:
                queue_name = arn.rsplit(":", 1)[1]
                sqs = self._aws_client("sqs")
                url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
                sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
            else:
                raise LookupError(f"unsupported destination {arn}")
        except Exception as e:  # a broken destination must not break the queue
            log.warning("could not deliver to the async destination", function=fn.name,
                        destination=arn, error=f"{type(e).__name__}: {e}")

    def _aws_client(self, service: str) -> Any:
        endpoint = self.options.service_endpoints.get(service.upper()) or self.options.service_endpoints.get("")
        if not endpoint:
            raise LookupError(f"this local Lambda service has no endpoint for {service}")
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                import boto3

                client = boto3.session.Session(
                    **self.options.credentials.boto3_kwargs(), region_name=self.options.region,
                ).client(service, endpoint_url=endpoint)
                self._clients[service] = client
            return client

    # -- routing --------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, str], headers: Any,
              body: bytes, *, raw_query: str = "") -> tuple[int, bytes, dict[str, str]]:
        if path.startswith(_API):
            rest = path[len(_API):].strip("/")
            if not rest:
                if method == "POST":
                    return self._create_function(_json(body))
                if method == "GET":
                    return self._list_functions(query)
            else:
                raw, _, sub = rest.partition("/")
                name, qualifier = _function_name(raw)
                qualifier = query.get("Qualifier", qualifier)
                if sub == "invocations" and method == "POST":
                    return self._invoke(name, qualifier, headers, body)
                if sub == "" and method == "GET":
                    return _ok(self._get_function(name, qualifier))
                if sub == "" and method == "DELETE":
                    return self._delete_function(name)
                if sub == "configuration" and method == "GET":
                    return _ok(self._lookup(name, qualifier).configuration())
                if sub == "configuration" and method == "PUT":
                    return _ok(self._update_configuration(name, _json(body)))
                if sub == "code" and method == "PUT":
                    return _ok(self._update_code(name, _json(body)))
        eic = "/2019-09-25/functions/"
        if path.startswith(eic) and "/event-invoke-config" in path:
            raw, _, sub = path[len(eic):].partition("/event-invoke-config")
            name, qualifier = _function_name(raw)
            return self._event_invoke_config(method, name, query.get("Qualifier", qualifier), sub, body)
        for prefix in ("/2017-10-31/functions/", "/2019-09-30/functions/"):
            if path.startswith(prefix) and path.endswith("/concurrency"):
                name, _ = _function_name(path[len(prefix):-len("/concurrency")])
                return self._concurrency(method, name, body)
        tags = "/2017-03-31/tags/"
        if path.startswith(tags):
            return self._tags(method, unquote(path[len(tags):]), body, raw_query)
        if path.startswith("/_lambdarun/"):
            return self._extension(method, path, query, body)
        raise ApiError(404, "UnknownOperationException", f"Unknown operation {method} {path}")

    # -- persistence (see lambdarun.local.persist) -------------------------------------

    def _save_functions(self) -> None:
        """Write the control plane to the state directory (after every change)."""
        if self._state is None:
            return

        def snapshot() -> list[dict[str, Any]]:
            with self._lock:
                return [_function_record(f) for f in self._functions.values()]

        self._state.functions.save(snapshot)

    def _keep_event(self, fn: _Function, event: _AsyncEvent, *, running: bool) -> None:
        assert self._state is not None
        self._state.events.put(StoredEvent(
            function=fn.name, request_id=event.request_id, payload=event.payload,
            client_context=event.client_context, received=event.received,
            attempts=event.attempts, marker=event.marker, running=running,
        ))

    def _forget_events(self, request_ids: list[str]) -> None:
        if self._state is not None:
            for request_id in request_ids:
                self._state.events.remove(request_id)

    def _restore_functions(self) -> None:
        """Recreate the saved functions (before the API serves). A saved function whose
        code is gone, or whose record is invalid, is left out and logged."""
        assert self._state is not None
        code_root = (self.options.state_dir / "functions").resolve()
        for doc in self._state.functions.load():
            try:
                fn = _function_from_record(doc, self.options.region)
                if not fn.code_dir.is_dir():
                    raise ValueError(f"its code directory {fn.code_dir} is gone")
                resolved = fn.code_dir.resolve()
                if not fn.local_code and (resolved.parent.parent != code_root
                                          or not resolved.name.startswith("code-")):
                    raise ValueError(f"its code directory {fn.code_dir} is not one of "
                                     f"{code_root}/<name>/code-<id>")
            except (KeyError, TypeError, ValueError, ApiError) as e:
                log.warning("saved function not restored", function=doc.get("name"),
                            error=getattr(e, "message", None) or str(e))
                continue
            self._functions[fn.name] = fn
        if self._functions:
            log.info("functions restored", count=len(self._functions))
        self._save_functions()  # drop what was left out
        # extracted code no restored function uses (deleted or updated before a crash)
        remove_orphan_code(code_root, [f.code_dir for f in self._functions.values() if not f.local_code])

    def _restore_events(self) -> None:
        """Queue the saved Event invocations again. One that was running when the service
        died counts as a failed attempt: retried if attempts remain, else it fails
        (``RetriesExhausted``, on-failure destination) like any other."""
        assert self._state is not None
        requeued = 0
        for stored in self._state.events.load():
            fn = self._functions.get(stored.function)
            if fn is None:
                log.warning("queued event of a function that no longer exists dropped",
                            function=stored.function, request_id=stored.request_id)
                self._forget_events([stored.request_id])
                continue
            event = _AsyncEvent(stored.payload, stored.client_context, request_id=stored.request_id,
                                received=stored.received, attempts=stored.attempts,
                                marker=stored.marker)
            retries = (fn.event_invoke_config or {}).get("MaximumRetryAttempts", self.options.async_retries)
            event.record = self._record(event.request_id, fn.name, "Event", "queued")
            event.record.attempts = event.attempts  # attempts made before the restart count
            if stored.running and stored.attempts > retries:
                event.record.status = "crashed"
                event.record.error_type = "Runtime.ExitError"
                event.record.error_message = "the local service stopped during its last attempt"
                self._forget_events([event.request_id])
                self._async_failed(fn, event, None, "RetriesExhausted")
                continue
            self._enqueue_async(fn, event)
            requeued += 1
        if requeued:
            log.info("queued events restored", count=requeued)

    # -- the extension API (/_lambdarun/...) -------------------------------------------

    def _extension(self, method: str, path: str, query: dict[str, str],
                   body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """lambdarun's own endpoints next to the Lambda API (see the README)."""
        parts = path.strip("/").split("/")[1:]
        if method == "GET" and parts == ["functions"]:
            return _ok({"functions": self.functions_view()})
        if method == "GET" and parts == ["invocations"]:
            return _ok(self.invocations_view(query))
        if method == "GET" and len(parts) == 2 and parts[0] == "invocations":
            return _ok(self.invocation_detail(unquote(parts[1])))
        if method == "POST" and len(parts) == 3 and parts[0] == "functions" and parts[2] == "stop":
            marker = _json(body).get("marker")
            if not isinstance(marker, str) or not marker:
                raise ApiError(400, "InvalidParameterValueException",
                               'The body must be {"marker": "<ClientContext custom.lambdarun_attempt>"}.')
            return _ok(self.stop_invocations(_function_name(parts[1])[0], marker))
        if path == "/_lambdarun/health" and method == "GET":
            return _ok({"pid": os.getpid(), "url": self.url, "environments": self.environment_pids(),
                        "concurrency_limit": self.options.concurrency_limit})
        raise ApiError(404, "UnknownOperationException", f"Unknown operation {method} {path}")

    def stop_invocations(self, name: str, marker: str) -> dict[str, list[str]]:
        """Stop ``name``'s invocations whose ClientContext has ``custom.lambdarun_attempt ==
        marker``: a running one fails with ``Runtime.Cancelled`` and its environment is killed
        (process group, SIGKILL); a queued or retry-waiting Event is dropped (no retry, no
        destination). Returns ``{"stopped": [request ids], "dropped": [request ids]}``."""
        fn = self._lookup(name)
        with self._lock:
            dropped = [e for e in fn.async_queue if e.marker == marker]
            for event in dropped:
                fn.async_queue.remove(event)
            waiting = [e for e in fn.retrying if e.marker == marker]
            for event in waiting:
                fn.retrying.discard(event)
            dropped += waiting
            for event in dropped:
                event.cancelled = True
            running = [inv for inv in fn.inflight if inv.marker == marker]
        stopped = []
        for inv in running:
            if not inv.cancel(marker):
                continue  # it finished first
            stopped.append(inv.request_id)
            env = inv.env
            if env is not None:
                env.write_log(f"{_now_iso()} {inv.request_id} Invocation stopped "
                              f"({STOP_MARKER_KEY} {marker})\n")
                env.kill("stopped")
        self._forget_events([e.request_id for e in dropped])
        for event in dropped:
            rec = event.record
            if rec is not None:
                rec.status, rec.error_type = "failed", CANCELLED_ERROR
                rec.error_message = f"Event stopped while queued ({STOP_MARKER_KEY} {marker})"
        if stopped or dropped:
            log.info("invocations stopped", function=name, marker=marker, stopped=stopped,
                     dropped=[e.request_id for e in dropped])
        return {"stopped": stopped, "dropped": [e.request_id for e in dropped]}

    def functions_view(self) -> list[dict[str, Any]]:
        """``GET /_lambdarun/functions``: every function with its environments."""
        with self._lock:
            fns = [self._functions[n] for n in sorted(self._functions)]
            envs = [e for e in self._environments if not e.dead]
            out = []
            for fn in fns:
                environments = [
                    {
                        "id": e.id,
                        "pid": e.pid,
                        "state": ("cold" if not e.initialized.is_set()
                                  else "busy" if e.in_use else "warm"),
                        "started_at": e.started_at,
                        "invocations": e.invocations,
                    }
                    for e in sorted(envs, key=lambda e: e.started_at)
                    if e.function is fn
                ]
                out.append({
                    "name": fn.name,
                    "handler": fn.handler,
                    "runtime": fn.runtime,
                    "timeout": fn.timeout,
                    "memory_size": fn.memory_size,
                    "reserved_concurrency": fn.reserved,
                    "environments": environments,
                    "concurrency_in_use": fn.busy,
                    "code": "directory" if fn.local_code else "zip",
                })
        return out

    def invocations_view(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /_lambdarun/invocations``: newest first, filtered, paged by ``before``."""
        function = query.get("function") or None
        status = query.get("status") or None
        try:
            limit = int(query.get("limit") or 50)
            before = int(query["before"]) if query.get("before") else None
        except ValueError as e:
            raise ApiError(400, "InvalidParameterValueException",
                           f"limit and before must be integers: {e}") from e
        if not 1 <= limit <= 1000:
            raise ApiError(400, "InvalidParameterValueException", "limit must be between 1 and 1000.")
        if status is not None and status not in _STATUSES:
            raise ApiError(400, "InvalidParameterValueException",
                           f"status must be one of {', '.join(_STATUSES)}.")
        page: list[dict[str, Any]] = []
        more = False
        for rec in reversed(self.records()):
            if before is not None and rec.seq >= before:
                continue
            if (function is not None and rec.function != function) or (
                status is not None and rec.status != status
            ):
                continue
            if len(page) == limit:
                more = True
                break
            page.append(rec.summary())
        return {"invocations": page, "next_before": page[-1]["seq"] if more else None}

    def invocation_detail(self, request_id: str) -> dict[str, Any]:
        """``GET /_lambdarun/invocations/{request_id}``: the record, its log, error, response."""
        for rec in reversed(self.records()):
            if rec.request_id == request_id:
                return rec.detail()
        raise ApiError(404, "ResourceNotFoundException",
                       f"No invocation record {request_id} (the last {self.options.record_limit} are kept).")

    def _lookup(self, name: str, qualifier: str | None = None) -> _Function:
        with self._lock:
            fn = self._functions.get(name)
        if fn is None or (qualifier not in (None, "", "$LATEST")):
            raise _not_found(name if not qualifier else f"{name}:{qualifier}", self.options.region)
        return fn

    # -- control plane --------------------------------------------------------------

    def _materialise_code(self, name: str, code: Mapping[str, Any]) -> tuple[Path, bool, str, int]:
        """Return (code_dir, local, sha256, size) for a ``Code`` / UpdateFunctionCode body."""
        if code.get("ImageUri"):
            raise ApiError(400, "InvalidParameterValueException",
                           "Container images are not supported by the local Lambda service; use a zip or Code={'S3Bucket': '__local__', 'S3Key': '/abs/dir'}.")
        bucket, key = code.get("S3Bucket"), code.get("S3Key")
        if bucket in LOCAL_CODE_BUCKETS:
            directory = Path(str(key or "")).expanduser()
            if not directory.is_absolute() or not directory.is_dir():
                raise ApiError(400, "InvalidParameterValueException",
                               f"S3Key must be an existing absolute directory for the local code bucket {bucket!r}, got {key!r}.")
            digest = hashlib.sha256(str(directory.resolve()).encode()).digest()
            return directory.resolve(), True, base64.b64encode(digest).decode(), 0
        if bucket:
            data = self._fetch_s3(bucket, str(key), code.get("S3ObjectVersion"))
        elif code.get("ZipFile"):
            try:
                data = base64.b64decode(code["ZipFile"])
            except (binascii.Error, TypeError) as e:
                raise ApiError(400, "InvalidParameterValueException", f"ZipFile is not base64: {e}") from e
        else:
            raise ApiError(400, "InvalidParameterValueException",
                           "Code needs ZipFile, S3Bucket/S3Key, or S3Bucket='__local__' with S3Key=<absolute directory>.")
        if len(data) > ZIP_UPLOAD_LIMIT:
            raise ApiError(413, "RequestEntityTooLargeException",
                           f"Zipped code must be smaller than {ZIP_UPLOAD_LIMIT} bytes.")
        target = self.options.state_dir / "functions" / name / f"code-{uuid.uuid4().hex[:12]}"
        _extract_zip(data, target)
        return target, False, base64.b64encode(hashlib.sha256(data).digest()).decode(), len(data)

    def _fetch_s3(self, bucket: str, key: str, version: str | None) -> bytes:
        try:
            s3 = self._aws_client("s3")
        except LookupError as e:
            raise ApiError(400, "InvalidParameterValueException",
                           "This local Lambda service has no S3 endpoint; upload a ZipFile instead.") from e
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version:
            kwargs["VersionId"] = version
        try:
            return s3.get_object(**kwargs)["Body"].read()
        except Exception as e:
            raise ApiError(400, "InvalidParameterValueException",
                           f"Error occurred while GetObject. S3 Error Code: {type(e).__name__}. S3 Error Message: {e}") from e

    def _create_function(self, req: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        name = req.get("FunctionName") or ""
        name, _ = _function_name(name)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ApiError(400, "InvalidParameterValueException",
                           f"FunctionName {name!r} must be 1-64 letters, digits, hyphens or underscores.")
        if req.get("PackageType", "Zip") != "Zip":
            raise ApiError(400, "InvalidParameterValueException", "Only PackageType Zip is supported locally.")
        runtime = req.get("Runtime") or f"python{sys.version_info.major}.{sys.version_info.minor}"
        if not runtime.startswith("python"):
            raise ApiError(400, "InvalidParameterValueException",
                           f"The local Lambda service runs Python functions only (Runtime {runtime!r}).")
        _refuse_layers(req)
        handler = req.get("Handler")
        if not handler:
            raise ApiError(400, "InvalidParameterValueException", "Handler is required for Zip functions.")
        timeout = int(req.get("Timeout", 3))
        memory = int(req.get("MemorySize", 128))
        _check_limits(timeout, memory)
        with self._lock:
            if name in self._functions:
                raise ApiError(409, "ResourceConflictException", f"Function already exist: {name}")
        code_dir, local, sha, size = self._materialise_code(name, req.get("Code") or {})
        fn = _Function(
            name=name, handler=handler, runtime=runtime, role=req.get("Role", ""),
            timeout=timeout, memory_size=memory,
            environment=dict((req.get("Environment") or {}).get("Variables") or {}),
            description=req.get("Description", ""), code_dir=code_dir, local_code=local,
            code_sha256=sha, code_size=size, region=self.options.region,
            tags=dict(req.get("Tags") or {}),
        )
        with self._lock:
            conflict = name in self._functions
            if not conflict:
                self._functions[name] = fn
        if conflict:
            if not local:
                shutil.rmtree(code_dir, ignore_errors=True)
            raise ApiError(409, "ResourceConflictException", f"Function already exist: {name}")
        self._save_functions()
        log.debug("function created", function=name, code_dir=str(code_dir))
        return 201, json.dumps(fn.configuration()).encode(), {}

    def _get_function(self, name: str, qualifier: str | None) -> dict[str, Any]:
        fn = self._lookup(name, qualifier)
        out: dict[str, Any] = {
            "Configuration": fn.configuration(),
            "Code": {"RepositoryType": "S3", "Location": fn.code_dir.as_uri()},
            "Tags": dict(fn.tags),
        }
        if fn.reserved is not None:
            out["Concurrency"] = {"ReservedConcurrentExecutions": fn.reserved}
        return out

    def _list_functions(self, query: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            names = sorted(self._functions)
            fns = [self._functions[n] for n in names]
        start = int(query.get("Marker") or 0)
        size = min(int(query.get("MaxItems") or 50), 50)
        page = fns[start:start + size]
        out: dict[str, Any] = {"Functions": [f.configuration() for f in page]}
        if start + size < len(fns):
            out["NextMarker"] = str(start + size)
        return _ok(out)

    def _retire(self, fn: _Function) -> None:
        """After a code/config change: new invocations get fresh environments."""
        with self._lock:
            fn.generation += 1
            fn.revision_id = str(uuid.uuid4())
            fn.last_modified = _now_iso()
            idle, fn.idle = fn.idle, []
        for env in idle:
            env.kill("updated")

    def _update_configuration(self, name: str, req: dict[str, Any]) -> dict[str, Any]:
        fn = self._lookup(name)
        _refuse_layers(req)
        timeout = int(req.get("Timeout", fn.timeout))
        memory = int(req.get("MemorySize", fn.memory_size))
        _check_limits(timeout, memory)
        with self._lock:
            fn.timeout, fn.memory_size = timeout, memory
            if "Environment" in req:
                fn.environment = dict((req.get("Environment") or {}).get("Variables") or {})
            for key, attr in (("Handler", "handler"), ("Description", "description"),
                              ("Role", "role"), ("Runtime", "runtime")):
                if key in req:
                    setattr(fn, attr, req[key])
        self._retire(fn)
        self._save_functions()
        return fn.configuration()

    def _update_code(self, name: str, req: dict[str, Any]) -> dict[str, Any]:
        fn = self._lookup(name)
        if req.get("DryRun"):
            return fn.configuration()
        code_dir, local, sha, size = self._materialise_code(name, req)
        old = None if fn.local_code else fn.code_dir
        with self._lock:
            fn.code_dir, fn.local_code, fn.code_sha256, fn.code_size = code_dir, local, sha, size
        self._retire(fn)
        self._save_functions()
        if old is not None and old != code_dir:
            # running environments keep their cwd open; removing the files is safe on POSIX
            shutil.rmtree(old, ignore_errors=True)
        return fn.configuration()

    def _delete_function(self, name: str) -> tuple[int, bytes, dict[str, str]]:
        fn = self._lookup(name)
        with self._lock:
            self._functions.pop(name, None)
            fn.deleted = True
            forgotten = [e.request_id for e in (*fn.async_queue, *fn.retrying)]
            fn.async_queue.clear()
            idle, fn.idle = fn.idle, []
            self._capacity.notify_all()
        self._save_functions()
        self._forget_events(forgotten)
        for env in idle:
            env.kill("deleted")
        if not fn.local_code:
            # its own code only: a function created anew under this name has another code-<id>
            shutil.rmtree(fn.code_dir, ignore_errors=True)
            try:
                fn.code_dir.parent.rmdir()
            except OSError:
                pass
        return 204, b"", {}

    def _tags(self, method: str, arn: str, body: bytes, raw_query: str) -> tuple[int, bytes, dict[str, str]]:
        """ListTags / TagResource / UntagResource of a function (by ARN)."""
        if ":function:" not in arn:
            raise ApiError(400, "InvalidParameterValueException",
                           f"The local Lambda service tags functions only, not {arn!r}.")
        name, qualifier = _function_name(arn)
        fn = self._lookup(name, qualifier)
        if method == "GET":
            with self._lock:
                return _ok({"Tags": dict(fn.tags)})
        if method == "POST":
            new = _json(body).get("Tags") or {}
            if not isinstance(new, dict):
                raise ApiError(400, "InvalidParameterValueException", "Tags must be a map of strings.")
            with self._lock:
                fn.tags.update({str(k): str(v) for k, v in new.items()})
            self._save_functions()
            return 204, b"", {}
        if method == "DELETE":
            keys = parse_qs(raw_query).get("tagKeys", [])
            with self._lock:
                for key in keys:
                    fn.tags.pop(key, None)
            self._save_functions()
            return 204, b"", {}
        raise ApiError(404, "UnknownOperationException", f"Unknown operation {method} tags")

    def _concurrency(self, method: str, name: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        fn = self._lookup(name)
        if method == "PUT":
            n = int(_json(body).get("ReservedConcurrentExecutions", -1))
            if n < 0 or n > self.options.concurrency_limit:
                raise ApiError(400, "InvalidParameterValueException",
                               f"ReservedConcurrentExecutions must be between 0 and {self.options.concurrency_limit}.")
            with self._capacity:
                fn.reserved = n
                self._capacity.notify_all()
            self._save_functions()
            return _ok({"ReservedConcurrentExecutions": n})
        if method == "DELETE":
            with self._capacity:
                fn.reserved = None
                self._capacity.notify_all()
            self._save_functions()
            return 204, b"", {}
        if method == "GET":
            return _ok({} if fn.reserved is None else {"ReservedConcurrentExecutions": fn.reserved})
        raise ApiError(404, "UnknownOperationException", f"Unknown operation {method} concurrency")

    def _event_invoke_config(self, method: str, name: str, qualifier: str | None, sub: str,
                             body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """Put/Update/Get/Delete/ListFunctionEventInvokeConfig(s)."""
        fn = self._lookup(name, qualifier)

        def shaped(cfg: dict[str, Any]) -> dict[str, Any]:
            return {"FunctionArn": f"{fn.arn}:$LATEST", **cfg}

        if sub == "/list" and method == "GET":
            items = [shaped(fn.event_invoke_config)] if fn.event_invoke_config else []
            return _ok({"FunctionEventInvokeConfigs": items})
        if method in ("PUT", "POST"):
            req = _json(body)
            base = {} if method == "PUT" else dict(fn.event_invoke_config or {})
            if method == "POST" and fn.event_invoke_config is None:
                raise ApiError(404, "ResourceNotFoundException",
                               f"The function {fn.arn} doesn't have an EventInvokeConfig")
            for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig"):
                if key in req:
                    base[key] = req[key]
            retries = base.get("MaximumRetryAttempts")
            if retries is not None and not 0 <= int(retries) <= 2:
                raise ApiError(400, "InvalidParameterValueException", "MaximumRetryAttempts must be 0, 1 or 2.")
            age = base.get("MaximumEventAgeInSeconds")
            if age is not None and not 60 <= int(age) <= 21600:
                raise ApiError(400, "InvalidParameterValueException",
                               "MaximumEventAgeInSeconds must be between 60 and 21600.")
            for which in ("OnSuccess", "OnFailure"):
                arn = ((base.get("DestinationConfig") or {}).get(which) or {}).get("Destination")
                if arn and ":lambda:" not in arn and ":sqs:" not in arn:
                    raise ApiError(400, "InvalidParameterValueException",
                                   f"The local Lambda service delivers {which} records to Lambda "
                                   f"functions and SQS queues only, not {arn}.")
            base["LastModified"] = time.time()
            fn.event_invoke_config = base
            self._save_functions()
            return _ok(shaped(base))
        if method == "GET":
            if fn.event_invoke_config is None:
                raise ApiError(404, "ResourceNotFoundException",
                               f"The function {fn.arn} doesn't have an EventInvokeConfig")
            return _ok(shaped(fn.event_invoke_config))
        if method == "DELETE":
            fn.event_invoke_config = None
            self._save_functions()
            return 204, b"", {}
        raise ApiError(404, "UnknownOperationException", f"Unknown operation {method} event-invoke-config")

    # -- data plane -----------------------------------------------------------------

    def _invoke(self, name: str, qualifier: str | None, headers: Any,
                body: bytes) -> tuple[int, bytes, dict[str, str]]:
        fn = self._lookup(name, qualifier)
        invocation_type = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        limit = ASYNC_REQUEST_LIMIT if invocation_type == "Event" else SYNC_REQUEST_LIMIT
        if len(body) > limit:
            raise ApiError(
                413, "RequestEntityTooLargeException",
                f"Request must be smaller than {limit} bytes for the "
                f"{'InvokeAsync' if invocation_type == 'Event' else 'InvokeFunction'} operation",
            )
        payload = body or b"{}"
        try:
            json.loads(payload)
        except ValueError as e:
            raise ApiError(400, "InvalidRequestContentException",
                           f"Could not parse request body into json: {e}") from e
        client_context = None
        marker = None
        raw_cc = headers.get("X-Amz-Client-Context")
        if raw_cc:
            try:
                client_context = base64.b64decode(raw_cc).decode("utf-8")
                doc = json.loads(client_context)
            except (binascii.Error, ValueError) as e:
                raise ApiError(400, "InvalidRequestContentException",
                               f"Client context must be base64-encoded JSON: {e}") from e
            custom = doc.get("custom") if isinstance(doc, dict) else None
            if isinstance(custom, dict) and custom.get(STOP_MARKER_KEY) is not None:
                marker = str(custom[STOP_MARKER_KEY])
        if invocation_type == "DryRun":
            return 204, b"", {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": str(uuid.uuid4())}
        if invocation_type == "Event":
            request_id = self._enqueue_async(fn, _AsyncEvent(payload, client_context, marker=marker))
            return 202, b"", {"x-amzn-RequestId": request_id}
        if invocation_type != "RequestResponse":
            raise ApiError(400, "InvalidParameterValueException",
                           f"Unsupported invocation type {invocation_type!r}.")
        inv = _Invocation(payload, client_context, fn.timeout, marker)
        rec = inv.record = self._record(inv.request_id, fn.name, "RequestResponse", "running")
        rec.attempts = 1
        try:
            env, _cold = self._run(fn, inv, wait=False)
        except ApiError as e:
            rec.status = "throttled" if e.status == 429 else "failed"
            rec.error_type, rec.error_message = e.code, e.message
            raise
        out = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": inv.request_id}
        if inv.function_error:
            out["X-Amz-Function-Error"] = inv.function_error
        if env is not None and (headers.get("X-Amz-Log-Type") or "").lower() == "tail":
            tail = env.log_since(inv.log_start)[-LOG_TAIL_BYTES:]
            out["X-Amz-Log-Result"] = base64.b64encode(tail).decode()
        return 200, inv.result, out


_STATUSES = ("running", "succeeded", "failed", "timeout", "crashed", "throttled", "queued")


_RECORD_FIELDS = ("name", "handler", "runtime", "role", "timeout", "memory_size", "environment",
                  "description", "local_code", "code_sha256", "code_size", "tags", "reserved",
                  "revision_id", "last_modified", "event_invoke_config")


def _function_record(fn: _Function) -> dict[str, Any]:
    """The persistent fields of ``fn`` (see :class:`~lambdarun.local.persist.FunctionStore`)."""
    out = {k: getattr(fn, k) for k in _RECORD_FIELDS}
    out["code_dir"] = str(fn.code_dir)
    out["environment"] = dict(fn.environment)
    out["tags"] = dict(fn.tags)
    return out


def _function_from_record(doc: Mapping[str, Any], region: str) -> _Function:
    """A function from a saved record, validated like CreateFunction's input."""
    name = str(doc["name"])
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ValueError(f"invalid function name {name!r}")
    timeout, memory = int(doc["timeout"]), int(doc["memory_size"])
    _check_limits(timeout, memory)
    environment, tags = doc.get("environment") or {}, doc.get("tags") or {}
    if not isinstance(environment, dict) or not isinstance(tags, dict):
        raise ValueError("environment and tags must be maps")
    reserved = doc.get("reserved")
    if reserved is not None and int(reserved) < 0:
        raise ValueError(f"reserved concurrency {reserved!r} is negative")
    eic = doc.get("event_invoke_config")
    if eic is not None and not isinstance(eic, dict):
        raise ValueError("event_invoke_config must be a map")
    code_dir = Path(str(doc["code_dir"]))
    if not code_dir.is_absolute():
        raise ValueError(f"code directory {code_dir} is not absolute")
    return _Function(
        name=name, handler=str(doc["handler"]), runtime=str(doc["runtime"]), role=str(doc.get("role", "")),
        timeout=timeout, memory_size=memory,
        environment={str(k): str(v) for k, v in environment.items()},
        description=str(doc.get("description", "")), code_dir=code_dir,
        local_code=bool(doc["local_code"]), code_sha256=str(doc["code_sha256"]),
        code_size=int(doc["code_size"]), region=region,
        tags={str(k): str(v) for k, v in tags.items()},
        reserved=None if reserved is None else int(reserved),
        revision_id=str(doc.get("revision_id") or uuid.uuid4()),
        last_modified=str(doc.get("last_modified") or _now_iso()),
        event_invoke_config=eic,
    )
def _zip_member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member cannot be part of a function's code, or None."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
        return f"Zip member {name!r} has an absolute path or escapes the code directory."
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # made on Unix: the member's file type is known
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            return f"Zip member {name!r} is a symbolic link; symlinks are not accepted."
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            return f"Zip member {name!r} is a special file; only files and directories are accepted."
    return None


def _extract_zip(data: bytes, target: Path) -> None:
    """Extract a deployment package into ``target`` (created 0700), or refuse it whole.

    Checked before anything is written: a readable zip, no absolute/``..`` paths, no
    symlinks or special files, and a declared unzipped size within Lambda's quota; the size
    is enforced again while extracting (the central directory can lie). On any refusal
    nothing is left on disk."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise ApiError(400, "InvalidParameterValueException", f"Could not unzip uploaded file: {e}") from e
    with zf:
        infos = zf.infolist()
        for info in infos:
            problem = _zip_member_problem(info)
            if problem is not None:
                raise ApiError(400, "InvalidParameterValueException", problem)
        if sum(i.file_size for i in infos) > UNZIPPED_CODE_LIMIT:
            raise ApiError(400, "InvalidParameterValueException",
                           f"Unzipped size must be smaller than {UNZIPPED_CODE_LIMIT} bytes")
        created_parent = not target.parent.exists()
        private_dir(target.parent)
        target.mkdir(mode=0o700)
        written = 0
        try:
            for info in infos:
                dest = target.joinpath(*[p for p in info.filename.split("/") if p not in ("", ".")])
                if not dest.resolve().is_relative_to(target.resolve()):
                    raise ApiError(400, "InvalidParameterValueException",
                                   f"Zip member escapes the code directory: {info.filename}")
                if info.is_dir():
                    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                executable = (info.external_attr >> 16) & 0o111
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o700 if executable else 0o600)
                with zf.open(info) as src, open(fd, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > UNZIPPED_CODE_LIMIT:
                            raise ApiError(400, "InvalidParameterValueException",
                                           f"Unzipped size must be smaller than {UNZIPPED_CODE_LIMIT} bytes")
                        out.write(chunk)
        except BaseException as e:
            shutil.rmtree(target, ignore_errors=True)
            if created_parent:
                try:
                    target.parent.rmdir()
                except OSError:
                    pass
            if isinstance(e, (zipfile.BadZipFile, OSError, EOFError, zlib.error)):
                raise ApiError(400, "InvalidParameterValueException",
                               f"Could not unzip uploaded file: {e}") from e
            raise


def _refuse_layers(req: Mapping[str, Any]) -> None:
    if req.get("Layers"):
        raise ApiError(400, "InvalidParameterValueException",
                       "Layers are not supported by the local Lambda service: functions run on the "
                       "service's Python environment, so install the layer's packages there.")


def _check_limits(timeout: int, memory: int) -> None:
    if not 1 <= timeout <= 900:
        raise ApiError(400, "InvalidParameterValueException", "Timeout must be between 1 and 900 seconds.")
    if not 128 <= memory <= 10240:
        raise ApiError(400, "InvalidParameterValueException", "MemorySize must be between 128 and 10240 MB.")


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError as e:
        raise ApiError(400, "InvalidRequestContentException", f"Could not parse request body into json: {e}") from e
    if not isinstance(doc, dict):
        raise ApiError(400, "InvalidRequestContentException", "The request body must be a JSON object.")
    return doc


def _ok(doc: Any) -> tuple[int, bytes, dict[str, str]]:
    return 200, json.dumps(doc).encode(), {}

