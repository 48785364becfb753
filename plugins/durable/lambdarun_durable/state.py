"""Operation state, service-side transitions and the batched checkpoint writer.

Records
-------
Every state change of an operation is one *record* appended to the execution in the
:class:`lambdarun.types.CheckpointStore`::

    {"E": "StepSucceeded",   # history event type (None: not shown in history)
     "T": 1732633200123,     # event timestamp, epoch ms
     "Op": {...},            # full operation snapshot after the change (AWS shape)
     "X": {...},             # extra event details (retry delay, wait duration, ...)
     "S": "i" | "s",         # source: an invocation ("i") or the service ("s")
     "I": "<invocation id>"}

Folding the records (last snapshot per ``Op.Id`` wins) gives the operations the next
invocation replays; the records in order are the execution's history.

Durability point
----------------
An invocation buffers records and writes them with ONE ``append`` (one SQLite
transaction / one DynamoDB TransactWriteItems) when any of these happens:

* an at-most-once step is about to run its body (its START must be durable first);
* a callback is created, a chained invoke is started (other parties act on them);
* the invocation suspends, succeeds or fails (before the response is returned);
* the buffer reaches ``max_batch_records`` (default 1000) records or ~``max_batch_bytes``
  (2 MB, under DynamoDB's 4 MB transaction limit), or its oldest record is older than
  ``max_batch_age`` seconds (default 1.0; a timer thread enforces it while user code runs).

So a step result returned to user code may not be durable yet; if the invocation
dies before the next flush, those steps run again on the next invocation, which is the
at-least-once contract. Nothing the invocation *reports* (PENDING/SUCCEEDED/FAILED)
and no at-most-once step body ever runs ahead of its persisted checkpoint.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from lambdarun.errors import CheckpointConflictError, ExecutionNotFoundError

from lambdarun_durable.exceptions import CheckpointError, OrphanedChildException
from lambdarun_durable.lambda_service import TERMINAL_STATUSES, ErrorObject

log = structlog.get_logger(__name__)

Op = dict[str, Any]
Record = dict[str, Any]

CHECKPOINT_SIZE_LIMIT_BYTES = 256 * 1024
STATE_RESULT_LIMIT = 64 * 1024  # larger execution results stay only in the records

# Event type per (operation type, resulting status)
_EVENTS: dict[tuple[str, str], str] = {
    ("EXECUTION", "STARTED"): "ExecutionStarted",
    ("EXECUTION", "SUCCEEDED"): "ExecutionSucceeded",
    ("EXECUTION", "FAILED"): "ExecutionFailed",
    ("EXECUTION", "TIMED_OUT"): "ExecutionTimedOut",
    ("EXECUTION", "STOPPED"): "ExecutionStopped",
    ("CONTEXT", "STARTED"): "ContextStarted",
    ("CONTEXT", "SUCCEEDED"): "ContextSucceeded",
    ("CONTEXT", "FAILED"): "ContextFailed",
    ("STEP", "STARTED"): "StepStarted",
    ("STEP", "SUCCEEDED"): "StepSucceeded",
    ("STEP", "FAILED"): "StepFailed",
    ("WAIT", "STARTED"): "WaitStarted",
    ("WAIT", "SUCCEEDED"): "WaitSucceeded",
    ("WAIT", "CANCELLED"): "WaitCancelled",
    ("CALLBACK", "STARTED"): "CallbackStarted",
    ("CALLBACK", "SUCCEEDED"): "CallbackSucceeded",
    ("CALLBACK", "FAILED"): "CallbackFailed",
    ("CALLBACK", "TIMED_OUT"): "CallbackTimedOut",
    ("CHAINED_INVOKE", "STARTED"): "ChainedInvokeStarted",
    ("CHAINED_INVOKE", "SUCCEEDED"): "ChainedInvokeSucceeded",
    ("CHAINED_INVOKE", "FAILED"): "ChainedInvokeFailed",
    ("CHAINED_INVOKE", "TIMED_OUT"): "ChainedInvokeTimedOut",
    ("CHAINED_INVOKE", "STOPPED"): "ChainedInvokeStopped",
}

_DETAILS_KEY = {
    "STEP": "StepDetails",
    "CONTEXT": "ContextDetails",
    "WAIT": "WaitDetails",
    "CALLBACK": "CallbackDetails",
    "CHAINED_INVOKE": "ChainedInvokeDetails",
    "EXECUTION": "ExecutionDetails",
}


def now_ms_real() -> int:
    return int(time.time() * 1000)


# --- tokens and ids ------------------------------------------------------------------


def encode_token(store_url: str, version: int, invocation_id: str) -> str:
    """The opaque CheckpointToken: where the execution lives and the version loaded."""
    raw = json.dumps({"s": store_url, "v": version, "i": invocation_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"Invalid checkpoint token {token[:40]!r}: it must come from lambdarun's durable "
            "orchestrator (DurableService.invocation_event).",
            retryable=False,
        ) from e


def encode_callback_id(arn: str, operation_id: str) -> str:
    raw = json.dumps({"a": arn, "o": operation_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_callback_id(callback_id: str) -> tuple[str, str]:
    padded = callback_id + "=" * (-len(callback_id) % 4)
    try:
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return data["a"], data["o"]
    except Exception as e:  # noqa: BLE001
        raise ExecutionNotFoundError(
            f"Unknown callback id {callback_id!r}: pass the id returned by create_callback()"
        ) from e


# --- folding records ---------------------------------------------------------------------


def fold(records: Iterable[Mapping[str, Any]]) -> dict[str, Op]:
    ops: dict[str, Op] = {}
    for rec in records:
        op = rec.get("Op")
        if op is not None:
            ops[op["Id"]] = op
    return ops


def public_op(op: Mapping[str, Any]) -> dict[str, Any]:
    """The operation without engine-private keys (those starting with ``_``)."""
    return {k: v for k, v in op.items() if not k.startswith("_")}


def is_terminal(op: Mapping[str, Any] | None) -> bool:
    return op is not None and op["Status"] in TERMINAL_STATUSES


def event_for(op: Mapping[str, Any]) -> str | None:
    return _EVENTS.get((op["Type"], op["Status"]))


# --- transitions (what the durable service does with an OperationUpdate) ----------------


def transition(
    current: Mapping[str, Any] | None,
    *,
    op_id: str,
    op_type: str,
    action: str,
    now: int,
    parent_id: str | None = None,
    name: str | None = None,
    sub_type: str | None = None,
    payload: str | None = None,
    error: ErrorObject | None = None,
    options: Mapping[str, Any] | None = None,
    arn: str = "",
) -> tuple[Op, dict[str, Any]]:
    """Apply one OperationUpdate; return the new snapshot and the event's extra details."""
    options = options or {}
    extra: dict[str, Any] = {}
    if current is None:
        op: Op = {"Id": op_id, "Type": op_type, "Status": "STARTED"}
        if parent_id:
            op["ParentId"] = parent_id
        if name:
            op["Name"] = name
        if sub_type:
            op["SubType"] = sub_type
        op["StartTimestamp"] = now
    else:
        op = dict(current)
    dkey = _DETAILS_KEY[op_type]
    details = dict(op.get(dkey) or {})
    if action == "START":
        op["Status"] = "STARTED"
        op.setdefault("StartTimestamp", now)
        if op_type == "STEP":
            details.setdefault("Attempt", 0)
            details.pop("NextAttemptTimestamp", None)
        elif op_type == "WAIT":
            secs = int(options.get("WaitSeconds", 0))
            details["ScheduledEndTimestamp"] = now + secs * 1000
            extra = {"Duration": secs, "ScheduledEndTimestamp": details["ScheduledEndTimestamp"]}
        elif op_type == "CALLBACK":
            details["CallbackId"] = encode_callback_id(arn, op_id)
            timeout = int(options.get("TimeoutSeconds") or 0)
            heartbeat = int(options.get("HeartbeatTimeoutSeconds") or 0)
            op["_Callback"] = {
                "Timeout": timeout,
                "HeartbeatTimeout": heartbeat,
                "TimeoutAt": now + timeout * 1000 if timeout else None,
                "HeartbeatAt": now + heartbeat * 1000 if heartbeat else None,
            }
            extra = {"CallbackId": details["CallbackId"]}
            if heartbeat:
                extra["HeartbeatTimeout"] = heartbeat
            if timeout:
                extra["Timeout"] = timeout
        elif op_type == "CHAINED_INVOKE":
            op["_Invoke"] = {
                "FunctionName": options.get("FunctionName"),
                "TenantId": options.get("TenantId"),
                "Payload": payload,
                "ChildArn": None,
            }
            extra = {"FunctionName": options.get("FunctionName"), "Input": payload}
        elif op_type == "EXECUTION":
            details["InputPayload"] = payload
    elif action == "SUCCEED":
        op["Status"] = "SUCCEEDED"
        op["EndTimestamp"] = now
        if payload is not None:
            details["Result"] = payload
        if op_type == "CONTEXT" and options.get("ReplayChildren"):
            details["ReplayChildren"] = True
        details.pop("Error", None)
    elif action == "FAIL":
        op["Status"] = "FAILED"
        op["EndTimestamp"] = now
        if error is not None:
            details["Error"] = error.to_dict()
        if op_type == "STEP":
            extra = {"RetryDetails": {"CurrentAttempt": details.get("Attempt", 0) + 1, "NextAttemptDelaySeconds": 0}}
    elif action == "RETRY":
        delay = int(options.get("NextAttemptDelaySeconds", 0))
        attempt = int(details.get("Attempt", 0)) + 1
        op["Status"] = "PENDING"
        details["Attempt"] = attempt
        details["NextAttemptTimestamp"] = now + delay * 1000
        if payload is not None:
            details["Result"] = payload
        if error is not None:
            details["Error"] = error.to_dict()
        else:
            details.pop("Error", None)
        extra = {
            "Retry": True,
            "RetryDetails": {"CurrentAttempt": attempt, "NextAttemptDelaySeconds": delay},
        }
    elif action in ("READY", "TIMED_OUT", "STOPPED", "CANCEL"):
        op["Status"] = {"READY": "READY", "TIMED_OUT": "TIMED_OUT", "STOPPED": "STOPPED", "CANCEL": "CANCELLED"}[action]
        if action != "READY":
            op["EndTimestamp"] = now
        if error is not None:
            details["Error"] = error.to_dict()
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown action {action}")
    if details or dkey in op:
        op[dkey] = details
    return op, extra


def make_record(op: Op, extra: Mapping[str, Any], now: int, source: str, invocation_id: str | None) -> Record:
    event = event_for(op)
    if extra.get("Retry"):
        event = "StepFailed" if op.get("StepDetails", {}).get("Error") else "StepSucceeded"
    elif op["Status"] in ("READY", "PENDING"):
        event = None
    rec: Record = {"E": event, "T": now, "Op": op, "S": source}
    if extra:
        rec["X"] = dict(extra)
    if invocation_id:
        rec["I"] = invocation_id
    return rec


# --- execution state (one invocation) -----------------------------------------------------


class ExecutionState:
    """Operations of one execution as seen by one invocation, plus its write buffer."""

    def __init__(
        self,
        *,
        durable_execution_arn: str,
        store: Any,
        version: int,
        operations: dict[str, Op],
        invocation_id: str,
        clock: Callable[[], float] = time.time,
        max_batch_records: int = 1000,
        max_batch_age: float = 1.0,
        max_batch_bytes: int = 2_000_000,
    ) -> None:
        self.durable_execution_arn = durable_execution_arn
        self.store = store
        self.version = version
        self.operations = operations
        self.invocation_id = invocation_id
        self._clock = clock
        self.max_batch_records = max_batch_records
        self.max_batch_age = max_batch_age
        self.max_batch_bytes = max_batch_bytes  # DynamoDB transactions carry at most 4 MB
        self._buffer_bytes = 0
        self._buffer: list[Record] = []
        self._buffer_since: float | None = None
        self._lock = threading.RLock()
        self.flushes = 0
        self._has_prior = any(op["Type"] != "EXECUTION" for op in operations.values())

    # -- reading
    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def now(self) -> float:
        return self._clock()

    def get(self, op_id: str) -> Op | None:
        return self.operations.get(op_id)

    def has_prior_operations(self) -> bool:
        return self._has_prior

    def execution_operation(self) -> Op | None:
        for op in self.operations.values():
            if op["Type"] == "EXECUTION":
                return op
        return None

    # -- writing
    def checkpoint(
        self,
        *,
        op_id: str,
        op_type: str,
        action: str,
        parent_id: str | None = None,
        name: str | None = None,
        sub_type: str | None = None,
        payload: str | None = None,
        error: ErrorObject | None = None,
        options: Mapping[str, Any] | None = None,
        sync: bool = False,
        orphan_flag: threading.Event | None = None,
    ) -> Op:
        """Apply an update locally, buffer its record, flush when ``sync`` or the batch is full."""
        with self._lock:
            if orphan_flag is not None and orphan_flag.is_set():
                raise OrphanedChildException("batch already completed", operation_id=op_id)
            now = self.now_ms()
            op, extra = transition(
                self.operations.get(op_id),
                op_id=op_id,
                op_type=op_type,
                action=action,
                now=now,
                parent_id=parent_id,
                name=name,
                sub_type=sub_type,
                payload=payload,
                error=error,
                options=options,
                arn=self.durable_execution_arn,
            )
            self.operations[op_id] = op
            self._buffer.append(make_record(op, extra, now, "i", self.invocation_id))
            self._buffer_bytes += 300 + len(payload or "")
            if self._buffer_since is None:
                self._buffer_since = time.monotonic()
            if (
                sync
                or len(self._buffer) >= self.max_batch_records
                or self._buffer_bytes >= self.max_batch_bytes
                or time.monotonic() - self._buffer_since >= self.max_batch_age
            ):
                self.flush()
            return op

    def flush(self, extra_records: Sequence[Record] = (), state: Mapping[str, Any] | None = None) -> None:
        """Write the buffer (plus ``extra_records``) in one append; rebase over service writes."""
        with self._lock:
            records = self._buffer + list(extra_records)
            if not records and state is None:
                return
            for _ in range(20):
                for rec in records:
                    rec["V"] = self.version + 1
                try:
                    self.version = self.store.append(
                        self.durable_execution_arn, records, expected_version=self.version, state=state
                    )
                    break
                except CheckpointConflictError:
                    if self._rebase():  # our write had landed (a request retried after a lost response)
                        log.info("durable.checkpoint.landed", arn=self.durable_execution_arn, version=self.version)
                        break
            else:  # pragma: no cover - pathological contention
                raise CheckpointError("checkpoint kept conflicting with service updates; retry the invocation")
            self._buffer = []
            self._buffer_since = None
            self._buffer_bytes = 0
            self.flushes += 1

    def _rebase(self) -> bool:
        """Someone wrote since we loaded. Accept service-side records; refuse other invocations.

        Returns True when the write that conflicted had in fact landed: a request whose
        response was lost (dropped connection) and that the client retried finds its own
        records at the version it wrote; they are not written twice.
        """
        cp = self.store.load(self.durable_execution_arn)
        mine = self.version + 1
        landed = any(
            rec.get("V") == mine and rec.get("S") == "i" and rec.get("I") == self.invocation_id for rec in cp.records
        )
        ours = {rec["Op"]["Id"] for rec in self._buffer if rec.get("Op")}
        stored_exec = next((op for op in fold(cp.records).values() if op["Type"] == "EXECUTION"), None)
        last_exec = next(
            (r for r in reversed(cp.records) if (r.get("Op") or {}).get("Type") == "EXECUTION"), None
        )
        closed_by_us = landed and last_exec is not None and last_exec.get("V") == mine and last_exec.get("I") == self.invocation_id
        if stored_exec is not None and stored_exec["Status"] in TERMINAL_STATUSES and not closed_by_us:
            self._buffer = []
            self.operations[stored_exec["Id"]] = stored_exec
            raise ExecutionClosed(f"execution {self.durable_execution_arn} is {stored_exec['Status']}")
        for rec in cp.records:
            if rec.get("V", 0) <= self.version:
                continue
            if landed and rec.get("V") == mine:
                continue  # our own landed write
            if rec.get("S") == "i" and rec.get("I") != self.invocation_id:
                raise CheckpointConflictError(
                    f"Execution {self.durable_execution_arn} was checkpointed by another invocation "
                    f"({rec.get('I')}) since this one loaded it; this invocation stops so the two never "
                    "merge silently. The orchestrator re-invokes from the stored state."
                )
            op = rec.get("Op")
            if op is not None and op["Id"] not in ours:
                self.operations[op["Id"]] = op
        self.version = cp.version
        if landed:
            return True
        exec_op = self.execution_operation()
        if exec_op is not None and exec_op["Status"] in TERMINAL_STATUSES:
            self._buffer = []
            raise ExecutionClosed(f"execution {self.durable_execution_arn} is {exec_op['Status']}")
        return False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def flush_if_stale(self) -> None:
        """Flush when the oldest buffered record is older than ``max_batch_age`` (timer thread)."""
        since = self._buffer_since
        if since is None or time.monotonic() - since < self.max_batch_age:
            return
        with self._lock:
            if self._buffer_since is not None and time.monotonic() - self._buffer_since >= self.max_batch_age:
                self.flush()

    def start_flusher(self) -> Callable[[], None]:
        """Bound the age of buffered records even while user code runs; returns the stopper."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.max_batch_age / 2):
                try:
                    self.flush_if_stale()
                except BaseException:  # noqa: BLE001 - the invocation's own next flush reports it
                    log.warning("durable.flusher.failed", arn=self.durable_execution_arn, exc_info=True)

        thread = threading.Thread(target=loop, name="durable-flusher", daemon=True)
        thread.start()

        def stopper() -> None:
            stop.set()
            thread.join(timeout=5)

        return stopper


# --- execution-level helpers ---------------------------------------------------------------

import re  # noqa: E402

_ARN_RE = re.compile(
    r"^arn:[^:]*:lambda:([^:]*):([^:]*):function:([^:/]+):[^:/]+/durable-execution/([^/]+)/([^/]+)$"
)


def make_arn(function_name: str, execution_name: str, region: str = "us-east-1", account: str = "000000000000") -> str:
    return (
        f"arn:aws:lambda:{region}:{account}:function:{function_name}:$LATEST/durable-execution/"
        f"{execution_name}/{uuid.uuid4()}"
    )


def parse_arn(arn: str) -> dict[str, str]:
    m = _ARN_RE.match(arn)
    if not m:
        return {"FunctionName": "", "ExecutionName": arn}
    return {"Region": m.group(1), "FunctionName": m.group(3), "ExecutionName": m.group(4)}


def build_state(
    arn: str,
    exec_op: Mapping[str, Any] | None,
    status: str,
    *,
    end: int | None = None,
    result: str | None = None,
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The execution-level record kept in ``Checkpoint.state``."""
    info = parse_arn(arn)
    st: dict[str, Any] = {
        "DurableExecutionArn": arn,
        "FunctionName": info["FunctionName"],
        "DurableExecutionName": info["ExecutionName"],
        "Status": status,
        "status": status,
        "StartTimestamp": exec_op.get("StartTimestamp") if exec_op else None,
    }
    if exec_op and exec_op.get("_Parent"):
        st["Parent"] = exec_op["_Parent"]
    if end is not None:
        st["EndTimestamp"] = end
    if result is not None:
        if len(result) <= STATE_RESULT_LIMIT:
            st["Result"] = result
        else:  # kept once, in the EXECUTION operation's record (DynamoDB items are <= 400 KB)
            st["ResultInRecords"] = True
    if error is not None:
        st["Error"] = dict(error)
    return st


class ExecutionClosed(BaseException):  # noqa: N818
    """The execution was stopped or completed elsewhere while this invocation ran."""
