"""Checkpointing through Lambda's durable-execution API (``CheckpointDurableExecution``,
``GetDurableExecutionState``) instead of writing a checkpoint store directly: what a
lambdarun_durable handler does when the service that invoked it owns the execution (the
local Lambda service's durable API, or AWS Lambda durable functions).

It looks like a store to :class:`~lambdarun_durable.state.ExecutionState`: ``append``
turns the buffered records (operation snapshots) back into the ``OperationUpdate``s that
produce them and sends them with the current checkpoint token (rotated by every answer).
The client is ``boto3.client("lambda")``: ``AWS_ENDPOINT_URL_LAMBDA`` and the function's
credentials point it at the service, as AWS's SDK does. A checkpoint answered without a
token (the service interrupts a pausing execution) ends the invocation with PENDING
(:class:`~lambdarun_durable.exceptions.SuspendExecution`), as AWS's SDK does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from lambdarun.errors import CheckpointError
from lambdarun.types import Checkpoint

from lambdarun_durable.exceptions import SuspendExecution

_DETAILS = {"STEP": "StepDetails", "CONTEXT": "ContextDetails", "WAIT": "WaitDetails",
            "CALLBACK": "CallbackDetails", "CHAINED_INVOKE": "ChainedInvokeDetails",
            "EXECUTION": "ExecutionDetails"}
_ACTIONS = {"STARTED": "START", "SUCCEEDED": "SUCCEED", "FAILED": "FAIL", "PENDING": "RETRY",
            "CANCELLED": "CANCEL"}
_TIMESTAMPS = (("StartTimestamp",), ("EndTimestamp",), ("StepDetails", "NextAttemptTimestamp"),
               ("WaitDetails", "ScheduledEndTimestamp"))
#: a result larger than this is checkpointed (Lambda's response limit, less headroom)
RESPONSE_LIMIT = 6 * 1024 * 1024 - 50
_CLIENT: Any = None
_CLIENT_LOCK = threading.Lock()


def lambda_client() -> Any:
    """The process's boto3 Lambda client (created once, like AWS's SDK).

    Without botocore's client-side parameter validation: a checkpoint is built here from
    the engine's own records, and the service validates every request against the same
    model (AWS's does, and so does the local service). Measured: 0.26 instead of 0.34 ms of
    client CPU per CheckpointDurableExecution call (one per step by default)."""
    global _CLIENT
    with _CLIENT_LOCK:
        if _CLIENT is None:
            import boto3
            from botocore.config import Config

            _CLIENT = boto3.client("lambda", config=Config(connect_timeout=5, read_timeout=50,
                                                           parameter_validation=False))
        return _CLIENT


def update_of(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The OperationUpdate that produced ``record``'s snapshot (None: nothing to send)."""
    op = record.get("Op")
    if op is None:
        return None
    kind, action = op["Type"], _ACTIONS.get(op["Status"])
    if action is None or (kind == "EXECUTION" and action not in ("SUCCEED", "FAIL")):
        return None
    details = op.get(_DETAILS[kind]) or {}
    u: dict[str, Any] = {"Id": op["Id"], "Type": kind, "Action": action}
    for key in ("ParentId", "Name", "SubType"):
        if op.get(key):
            u[key] = op[key]
    if action in ("SUCCEED", "RETRY") and details.get("Result") is not None:
        u["Payload"] = details["Result"]
    if action in ("FAIL", "RETRY") and details.get("Error"):
        u["Error"] = details["Error"]
    now = record.get("T") or op.get("StartTimestamp") or 0
    if action == "RETRY":
        delay = max(0, round((details.get("NextAttemptTimestamp", now) - now) / 1000))
        u["StepOptions"] = {"NextAttemptDelaySeconds": delay}
    elif action == "START" and kind == "WAIT":
        u["WaitOptions"] = {"WaitSeconds": max(0, round((details.get("ScheduledEndTimestamp", now) - now) / 1000))}
    elif action == "START" and kind == "CALLBACK":
        cb = op.get("_Callback") or {}
        u["CallbackOptions"] = {"TimeoutSeconds": int(cb.get("Timeout") or 0),
                                "HeartbeatTimeoutSeconds": int(cb.get("HeartbeatTimeout") or 0)}
    elif action == "START" and kind == "CHAINED_INVOKE":
        inv = op.get("_Invoke") or {}
        u["ChainedInvokeOptions"] = {k: inv[k] for k in ("FunctionName", "TenantId") if inv.get(k)}
        if inv.get("Payload") is not None:
            u["Payload"] = inv["Payload"]
    elif action == "SUCCEED" and kind == "CONTEXT" and details.get("ReplayChildren"):
        u["ContextOptions"] = {"ReplayChildren": True}
    return u


def operation_from_api(op: Mapping[str, Any]) -> dict[str, Any]:
    """A REST operation (datetimes / epoch seconds) as the engine keeps it (epoch ms)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in op.items()}
    for path in _TIMESTAMPS:
        holder: Any = out
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and holder.get(path[-1]) is not None:
            value = holder[path[-1]]
            seconds = value.timestamp() if hasattr(value, "timestamp") else float(value)
            holder[path[-1]] = int(round(seconds * 1000))
    return out


class ApiCheckpointStore:
    """One invocation's checkpoints through the durable-execution API (see the module)."""

    url = "lambda-durable-api://"

    def __init__(self, token: str, client: Any = None) -> None:
        self.token = token
        self.client = client or lambda_client()
        #: the service answered a checkpoint without a token: nothing more is sent
        self.revoked = False
        self._lock = threading.Lock()

    def load(self, execution_id: str) -> Checkpoint:
        """The execution's operations, paged through GetDurableExecutionState."""
        ops: list[dict[str, Any]] = []
        marker = None
        while True:
            kw = {"Marker": marker} if marker else {}
            page = self.client.get_durable_execution_state(
                DurableExecutionArn=execution_id, CheckpointToken=self.token, MaxItems=1000, **kw)
            ops += [operation_from_api(op) for op in page.get("Operations") or []]
            marker = page.get("NextMarker")
            if not marker:
                break
        return Checkpoint(execution_id, 0, {}, tuple({"Op": op} for op in ops))

    def append(self, execution_id: str, records: Sequence[Mapping[str, Any]], *, expected_version: int,
               state: Mapping[str, Any] | None = None) -> int:
        # the execution's end travels in the invocation's answer (as AWS's SDK does), unless
        # its result is too large for a Lambda response: then it is checkpointed first
        updates = [u for u in (update_of(r) for r in records) if u is not None and not (
            u["Type"] == "EXECUTION" and (u["Action"] == "FAIL" or len(u.get("Payload") or "") <= RESPONSE_LIMIT))]
        with self._lock:
            if self.revoked:
                if updates:  # as AWS's SDK: nothing more is sent; the invocation ends PENDING
                    raise SuspendExecution("Checkpoint token revoked by the service; ending invocation with PENDING.")
                return expected_version + 1
            try:
                out = self.client.checkpoint_durable_execution(
                    DurableExecutionArn=execution_id, CheckpointToken=self.token, Updates=updates)
            except Exception as e:  # noqa: BLE001 - any refusal fails this invocation; the service retries it
                raise CheckpointError(
                    f"CheckpointDurableExecution refused this invocation's checkpoint ({e}); the service "
                    "re-invokes the execution from its stored state.") from e
            if out.get("CheckpointToken"):
                self.token = out["CheckpointToken"]
            elif not any(u["Type"] == "EXECUTION" for u in updates):
                # the service withdrew this invocation's token (AWS: the execution is pausing):
                # these updates are durable; the invocation stops and ends with PENDING, as
                # AWS's SDK does when a checkpoint answer omits the token
                self.revoked = True
                raise SuspendExecution("Checkpoint token revoked by the service; ending invocation with PENDING.")
        return expected_version + 1
