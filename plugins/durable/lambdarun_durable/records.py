"""The record model of a durable execution: tokens and ids, folding, service-side transitions.

Pure functions over records (no I/O); :mod:`lambdarun_durable.state` writes them in batches.

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
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lambdarun.errors import ExecutionNotFoundError

from lambdarun_durable.exceptions import CheckpointError
from lambdarun_durable.lambda_service import TERMINAL_STATUSES, ErrorObject

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
    """A callback id naming the execution and operation: hex, so it fits botocore's
    ``CallbackId`` pattern (``[A-Za-z0-9+/]+={0,2}``) and a URI path segment unescaped."""
    raw = json.dumps({"a": arn, "o": operation_id}, separators=(",", ":"))
    return raw.encode().hex()


def decode_callback_id(callback_id: str) -> tuple[str, str]:
    try:
        data = json.loads(bytes.fromhex(callback_id))
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


def updated_operation_ids(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """AWS's ``UpdatedOperationIds``: operations the service changed (a wait elapsed, a callback
    or chained invoke completed, a retry became due) since the last invocation began writing.

    The last invocation is the one whose ``InvocationCompleted`` record is the latest; the
    service records after that invocation's first record are its updates (what the service
    changed before it, the invocation itself had loaded)."""
    last = None
    for rec in reversed(records):
        if rec.get("E") == "InvocationCompleted":
            last = rec.get("I")
            break
    if last is None:
        return []
    first = next(n for n, rec in enumerate(records) if rec.get("S") == "i" and rec.get("I") == last)
    ids: list[str] = []
    for rec in records[first:]:
        op = rec.get("Op")
        if rec.get("S") == "s" and op is not None and op["Type"] != "EXECUTION" and op["Id"] not in ids:
            ids.append(op["Id"])
    return ids


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
        if op_type == "STEP":  # the try that succeeded counts, as AWS's service does
            details["Attempt"] = int(details.get("Attempt", 0)) + 1
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
        if op_type == "STEP":  # the try that failed counts, as AWS's service does
            details["Attempt"] = int(details.get("Attempt", 0)) + 1
            extra = {"RetryDetails": {"CurrentAttempt": details["Attempt"], "NextAttemptDelaySeconds": 0}}
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


# --- execution-level helpers ---------------------------------------------------------------

_ARN_RE = re.compile(
    r"^arn:[^:]*:lambda:([^:]*):([^:]*):function:([^:/]+):[^:/]+/durable-execution/([^/]+)/([^/]+)$"
)


def make_arn(function_name: str, execution_name: str, region: str = "us-east-1", account: str = "000000000000",
             version: str = "$LATEST") -> str:
    """AWS's durable-execution ARN: ``arn:aws:lambda:<region>:<account>:function:<name>:<version>
    /durable-execution/<execution name>/<id>`` (``function_name`` is a plain name)."""
    return (
        f"arn:aws:lambda:{region}:{account}:function:{function_name}:{version}/durable-execution/"
        f"{execution_name}/{uuid.uuid4()}"
    )


def function_ref(ref: str) -> tuple[str, str | None]:
    """(name, qualifier) of a function name, partial ARN or ARN (``fn``, ``fn:3``,
    ``arn:aws:lambda:...:function:fn:$LATEST``), as a chained invoke's FunctionName may be."""
    tail = ref.split(":function:", 1)[-1]
    name, _, qualifier = tail.partition(":")
    return name, qualifier or None


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
