"""The service side of durable executions: executions, timers, callbacks, history.

This is what AWS runs for you, minus the loop: it creates executions, fires timers (waits,
step retries, callback timeouts), accepts callback results and links chained invokes. The
driver that re-invokes the handler until the execution ends is
:class:`lambdarun_durable.orchestrator.Orchestrator`; the history's event shapes are in
:mod:`lambdarun_durable.history`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import structlog

from lambdarun.errors import CheckpointConflictError, LambdarunError

from lambdarun_durable.history import event_time, history_events
from lambdarun_durable.lambda_service import TERMINAL_STATUSES, ErrorObject
from lambdarun_durable.records import (
    build_state,
    decode_callback_id,
    encode_token,
    fold,
    make_arn,
    make_record,
    public_op,
    transition,
    updated_operation_ids,
)

log = structlog.get_logger(__name__)


class DurableServiceError(LambdarunError):
    """A durable service request was refused (e.g. a callback that already completed)."""


class ExecutionStuckError(DurableServiceError):
    """The execution is PENDING but nothing can make progress (no timer, callback or invoke)."""


class InvocationsConflictError(DurableServiceError):
    """Invocations kept losing checkpoint conflicts to another writer (e.g. an invocation a
    dead driver left running); the execution was left as it is, not failed."""


#: private EXECUTION-operation keys kept out of invocation events (they can be large)
_NOT_SENT = frozenset({"_Handlers"})
#: a paused execution timeout still fires 366 days after the start (AWS's
#: PauseDurableExecution ``ExecutionTimeoutPaused``)
MAX_PAUSED_TIMEOUT_MS = 366 * 86_400_000


def timeout_paused(state: Mapping[str, Any]) -> bool:
    """Whether the execution is paused with its timeout's clock stopped."""
    return bool(state.get("Paused")) and bool(state.get("TimeoutPaused", True))


@attrs.frozen
class Due:
    """The earliest time something becomes due, and whether only callback deadlines remain."""

    at: float
    callbacks_only: bool


class DurableService:
    """Executions in one checkpoint store."""

    def __init__(
        self,
        store: Any,
        *,
        clock: Callable[[], float] = time.time,
        region: str = "us-east-1",
        account: str = "000000000000",
        inline_operations: int = 1000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self.inline_operations = inline_operations
        self.changed = threading.Condition()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ------------------------------------------------------------------ executions
    def start_execution(
        self,
        function_name: str,
        input_payload: str | None = None,
        *,
        execution_name: str | None = None,
        parent: Mapping[str, Any] | None = None,
        execution_timeout: int | None = None,
        private: Mapping[str, Any] | None = None,
        version: str = "$LATEST",
    ) -> str:
        """Create an execution (status RUNNING, ExecutionStarted event); return its ARN.

        ``execution_timeout`` (seconds) is enforced: past it the execution is TIMED_OUT.
        """
        name = execution_name or str(uuid.uuid4())
        arn = make_arn(function_name, name, self.region, self.account, version)
        now = self.now_ms()
        op, extra = transition(
            # the EXECUTION operation's id is the ARN's last segment: AWS's SDK finds it so
            None, op_id=arn.rsplit("/", 1)[-1], op_type="EXECUTION", action="START", now=now, name=name,
            payload=input_payload,
        )
        if parent:
            op["_Parent"] = dict(parent)
        for key, value in (private or {}).items():  # engine-private, never in history
            op[f"_{key}"] = value
        extra: dict[str, Any] = {"Input": input_payload}
        if execution_timeout:
            op["_TimeoutAt"] = now + execution_timeout * 1000
            extra["ExecutionTimeout"] = execution_timeout
        rec = make_record(op, extra, now, "s", None)
        rec["V"] = 1
        state = build_state(arn, op, "RUNNING")
        create = self.store.create
        try:
            create(arn, state, [rec])  # lambdarun_durable stores accept initial records
        except TypeError:
            create(arn, state)
            self.store.append(arn, [rec], expected_version=1)
        log.debug("durable.execution.started", arn=arn, function=function_name)
        return arn

    def operations(self, arn: str) -> dict[str, dict[str, Any]]:
        return fold(self.store.load(arn).records)

    def invocation_event(self, arn: str) -> tuple[dict[str, Any], Any]:
        """The AWS-shaped invocation event for the execution's current state, and that state.

        Past ``inline_operations`` operations the event says ``NextMarker: "store"`` and the
        handler loads them itself (Lambda payloads are limited); in-process callers can hand
        over ``event["_operations"]`` instead (never sent over the wire).
        """
        cp = self.store.load(arn)
        ops = [
            {k: v for k, v in op.items() if k not in _NOT_SENT} if op["Type"] == "EXECUTION" else op
            for op in fold(cp.records).values()
        ]
        inline = len(ops) <= self.inline_operations
        event = {
            "DurableExecutionArn": arn,
            "CheckpointToken": encode_token(self.store.url, cp.version, str(uuid.uuid4())),
            "InitialExecutionState": {"Operations": ops if inline else [], "NextMarker": "" if inline else "store"},
            "UpdatedOperationIds": updated_operation_ids(cp.records),
        }
        return event, cp

    def in_process_input(self, arn: str, **kw: Any) -> Any:
        """A DurableInvocationInput carrying all operations (no reload by the handler)."""
        from lambdarun_durable.execution import DurableInvocationInput

        event, cp = self.invocation_event(arn)
        return DurableInvocationInput(
            durable_execution_arn=arn,
            checkpoint_token=event["CheckpointToken"],
            operations=list(fold(cp.records).values()),
            store=self.store,
            clock=self.clock,
            updated_operation_ids=event["UpdatedOperationIds"],
            **kw,
        )

    def describe(self, arn: str) -> dict[str, Any]:
        """Like GetDurableExecution: ARN, name, function, status, timestamps, result or error."""
        cp = self.store.load_state(arn) if hasattr(self.store, "load_state") else self.store.load(arn)
        st = dict(cp.state)
        out: dict[str, Any] = {
            "DurableExecutionArn": arn,
            "DurableExecutionName": st.get("DurableExecutionName"),
            "FunctionName": st.get("FunctionName"),
            "Status": st.get("Status"),
            "StartTimestamp": event_time(st.get("StartTimestamp")),
        }
        if st.get("EndTimestamp") is not None:
            out["EndTimestamp"] = event_time(st["EndTimestamp"])
        if st.get("ResultInRecords"):
            out["Result"] = execution_result(self.store.load(arn).records)
        elif st.get("Result") is not None:
            out["Result"] = st["Result"]
        if st.get("Error") is not None:
            out["Error"] = st["Error"]
        return out

    def list_executions(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        out = []
        for cp in self.store.list(status=status, limit=limit):
            st = cp.state
            out.append(
                {
                    "DurableExecutionArn": cp.execution_id,
                    "DurableExecutionName": st.get("DurableExecutionName"),
                    "FunctionName": st.get("FunctionName"),
                    "Status": st.get("Status"),
                    "StartTimestamp": event_time(st.get("StartTimestamp")),
                    **({"EndTimestamp": event_time(st["EndTimestamp"])} if st.get("EndTimestamp") else {}),
                }
            )
        return out

    # ------------------------------------------------------------------ service writes
    def _mutate(self, arn: str, build: Callable[[dict[str, Any], Mapping[str, Any], int], tuple[list, Any]]) -> int:
        """Load, compute service records with ``build(ops, state, now)``, append; retry on conflict."""
        for _ in range(100):
            cp = self.store.load(arn)
            ops = fold(cp.records)
            now = self.now_ms()
            records, state = build(ops, cp.state, now)
            if not records and state is None:
                return 0
            for r in records:
                r["V"] = cp.version + 1
            try:
                self.store.append(arn, records, expected_version=cp.version, state=state)
            except CheckpointConflictError:
                continue
            with self.changed:
                self.changed.notify_all()
            return len(records)
        raise DurableServiceError(f"could not update {arn}: too much contention; retry")

    def apply_due(self, arn: str) -> int:
        """Fire timers that are due: waits complete, retries become READY, callbacks time out."""

        def build(ops: dict[str, Any], state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            recs = []
            timeout_stopped = timeout_paused(state)
            for op in ops.values():
                if op["Type"] == "EXECUTION" and op["Status"] == "STARTED" and op.get("_TimeoutAt") \
                        and op["_TimeoutAt"] <= now and not timeout_stopped:
                    err = ErrorObject(message="Execution timed out", type="ExecutionTimedOut", data=None, stack_trace=None)
                    new, _ = transition(op, op_id=op["Id"], op_type="EXECUTION", action="TIMED_OUT", now=now, error=err)
                    rec = make_record(new, {"Error": err.to_dict()}, now, "s", None)
                    return [rec], build_state(arn, op, "TIMED_OUT", end=now, error=err.to_dict())
            for op in ops.values():
                t, s = op["Type"], op["Status"]
                if t == "WAIT" and s == "STARTED" and (op.get("WaitDetails") or {}).get("ScheduledEndTimestamp", 0) <= now:
                    new, _ = transition(op, op_id=op["Id"], op_type="WAIT", action="SUCCEED", now=now)
                    start = (op.get("StartTimestamp") or now)
                    duration = round(((op.get("WaitDetails") or {}).get("ScheduledEndTimestamp", now) - start) / 1000)
                    recs.append(make_record(new, {"Duration": duration}, now, "s", None))
                elif t == "STEP" and s == "PENDING" and (op.get("StepDetails") or {}).get("NextAttemptTimestamp", 0) <= now:
                    new, _ = transition(op, op_id=op["Id"], op_type="STEP", action="READY", now=now)
                    recs.append(make_record(new, {}, now, "s", None))
                elif t == "CALLBACK" and s == "STARTED":
                    cb = op.get("_Callback") or {}
                    kind = None
                    if cb.get("TimeoutAt") is not None and cb["TimeoutAt"] <= now:
                        kind = ("Callback.Timeout", f"Callback timed out after {cb.get('Timeout')} seconds")
                    elif cb.get("HeartbeatAt") is not None and cb["HeartbeatAt"] <= now:
                        kind = ("Callback.Heartbeat", f"Callback heartbeat not received within {cb.get('HeartbeatTimeout')} seconds")
                    if kind:
                        err = ErrorObject(message=kind[1], type=kind[0], data=None, stack_trace=None)
                        new, _ = transition(op, op_id=op["Id"], op_type="CALLBACK", action="TIMED_OUT", now=now, error=err)
                        recs.append(make_record(new, {}, now, "s", None))
            return recs, None

        return self._mutate(arn, build)

    @staticmethod
    def next_due_of(ops: Mapping[str, Mapping[str, Any]], state: Mapping[str, Any] | None = None) -> Due | None:
        """The next timer of ``ops`` (``state``: the execution's state; a pause with
        ``ExecutionTimeoutPaused`` stops the execution timeout's clock)."""
        times: list[tuple[float, bool]] = []
        timeout_stopped = state is not None and timeout_paused(state)
        for op in ops.values():
            t, s = op["Type"], op["Status"]
            if t == "EXECUTION" and s == "STARTED" and op.get("_TimeoutAt") and not timeout_stopped:
                times.append((op["_TimeoutAt"] / 1000, True))
            elif t == "WAIT" and s == "STARTED":
                times.append(((op.get("WaitDetails") or {}).get("ScheduledEndTimestamp", 0) / 1000, False))
            elif t == "STEP" and s == "PENDING":
                times.append(((op.get("StepDetails") or {}).get("NextAttemptTimestamp", 0) / 1000, False))
            elif t == "CALLBACK" and s == "STARTED":
                cb = op.get("_Callback") or {}
                deadlines = [d for d in (cb.get("TimeoutAt"), cb.get("HeartbeatAt")) if d is not None]
                if deadlines:
                    times.append((min(deadlines) / 1000, True))
        if not times:
            return None
        at = min(t for t, _ in times)
        return Due(at=at, callbacks_only=all(cb for t, cb in times if t == at))

    def _callback_update(self, callback_id: str, action: str, **kw: Any) -> None:
        arn, op_id = decode_callback_id(callback_id)

        def build(ops: dict[str, Any], _state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            op = ops.get(op_id)
            if op is None or op["Type"] != "CALLBACK":
                raise DurableServiceError(f"Callback {callback_id!r} does not exist in {arn}")
            if op["Status"] != "STARTED":
                raise DurableServiceError(
                    f"Callback {callback_id!r} is already {op['Status']}; a callback completes once"
                )
            if action == "HEARTBEAT":
                cb = dict(op.get("_Callback") or {})
                if cb.get("HeartbeatTimeout"):
                    cb["HeartbeatAt"] = now + cb["HeartbeatTimeout"] * 1000
                new = dict(op)
                new["_Callback"] = cb
                rec = make_record(new, {}, now, "s", None)
                rec["E"] = None
                return [rec], None
            new, _ = transition(op, op_id=op_id, op_type="CALLBACK", action=action, now=now, **kw)
            return [make_record(new, {}, now, "s", None)], None

        self._mutate(arn, build)

    def send_callback_success(self, callback_id: str, result: str | bytes | None = None) -> None:
        """Complete a callback with ``result`` (returned by ``Callback.result()`` via its serdes)."""
        payload = result.decode("utf-8") if isinstance(result, bytes) else result
        self._callback_update(callback_id, "SUCCEED", payload=payload)

    def send_callback_failure(self, callback_id: str, error: ErrorObject | Mapping[str, Any] | None = None) -> None:
        if isinstance(error, Mapping):
            error = ErrorObject.from_dict(error)
        self._callback_update(
            callback_id, "FAIL", error=error or ErrorObject(message="Callback failed", type=None, data=None, stack_trace=None)
        )

    def send_callback_heartbeat(self, callback_id: str) -> None:
        self._callback_update(callback_id, "HEARTBEAT")

    def stop_execution(self, arn: str, error: ErrorObject | Mapping[str, Any] | None = None) -> None:
        """Stop a running execution (ExecutionStopped); a running invocation ends at its next flush."""
        if isinstance(error, Mapping):
            error = ErrorObject.from_dict(error)
        err = error or ErrorObject(message="Execution stopped", type="ExecutionStopped", data=None, stack_trace=None)

        def build(ops: dict[str, Any], _state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            exec_op = next(o for o in ops.values() if o["Type"] == "EXECUTION")
            if exec_op["Status"] in TERMINAL_STATUSES:
                raise DurableServiceError(f"Execution {arn} is already {exec_op['Status']}")
            new, _ = transition(exec_op, op_id=exec_op["Id"], op_type="EXECUTION", action="STOPPED", now=now, error=err)
            rec = make_record(new, {"Error": err.to_dict()}, now, "s", None)
            return [rec], build_state(arn, exec_op, "STOPPED", end=now, error=err.to_dict())

        self._mutate(arn, build)

    def succeed_execution(self, arn: str, result: str | None) -> None:
        """Mark the execution SUCCEEDED with ``result`` (its invocation answered SUCCEEDED);
        an execution already ended (e.g. by its own checkpoint) is left as it is."""

        def build(ops: dict[str, Any], _state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            exec_op = next(o for o in ops.values() if o["Type"] == "EXECUTION")
            if exec_op["Status"] in TERMINAL_STATUSES:
                return [], None
            new, _ = transition(exec_op, op_id=exec_op["Id"], op_type="EXECUTION", action="SUCCEED", now=now,
                                payload=result)
            rec = make_record(new, {"Result": result}, now, "s", None)
            return [rec], build_state(arn, exec_op, "SUCCEEDED", end=now, result=result)

        self._mutate(arn, build)

    def record_invocation(self, arn: str, *, start_ms: int, end_ms: int, request_id: str,
                          error: Mapping[str, Any] | None = None) -> None:
        """Append an ``InvocationCompleted`` history event (with the error of a failed one)."""

        def build(_ops: dict[str, Any], _state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            x: dict[str, Any] = {"StartTimestamp": start_ms, "EndTimestamp": end_ms, "RequestId": request_id}
            if error is not None:
                x["Error"] = dict(error)
            return [{"E": "InvocationCompleted", "T": now, "X": x, "S": "s"}], None

        self._mutate(arn, build)

    def record_pause(self, arn: str, paused: bool, *, reason: str | None = None,
                     timeout_paused: bool = True) -> bool:
        """Persist a pause (or resume) of a running execution: the state's ``Paused`` flag and
        an ``ExecutionPaused``/``ExecutionResumed`` history event (AWS's names, with the
        ``Reason`` and ``ExecutionTimeoutPaused`` details). With ``timeout_paused`` (AWS's
        ``ExecutionTimeoutPaused``, default true) the execution timeout does not fire while
        paused and the resume extends it by the time spent paused, never past 366 days after
        the start. Returns whether anything changed (False: already in that state)."""

        def build(ops: dict[str, Any], state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            if bool(state.get("Paused")) == paused:
                return [], None
            x: dict[str, Any] = {}
            if reason is not None:
                x["Reason"] = reason
            if paused:
                x.update(PauseRequestTimestamp=now, ExecutionTimeoutPaused=timeout_paused)
                rec = {"E": "ExecutionPaused", "T": now, "X": x, "S": "s"}
                return [rec], {**state, "Paused": True, "PausedAt": now, "TimeoutPaused": timeout_paused}
            x["ResumeRequestTimestamp"] = now
            records: list[dict[str, Any]] = [{"E": "ExecutionResumed", "T": now, "X": x, "S": "s"}]
            exec_op = next((o for o in ops.values() if o["Type"] == "EXECUTION"), None)
            if state.get("TimeoutPaused", True) and exec_op is not None and exec_op.get("_TimeoutAt"):
                cap = (exec_op.get("StartTimestamp") or now) + MAX_PAUSED_TIMEOUT_MS
                moved = min(cap, exec_op["_TimeoutAt"] + max(0, now - int(state.get("PausedAt") or now)))
                if moved != exec_op["_TimeoutAt"]:  # a silent record (no event): the new deadline
                    records.append({"E": None, "T": now, "Op": {**exec_op, "_TimeoutAt": moved}, "S": "s"})
            rest = {k: v for k, v in state.items() if k not in ("PausedAt", "TimeoutPaused")}
            return records, {**rest, "Paused": False}

        return self._mutate(arn, build) > 0

    def fail_execution(self, arn: str, error: ErrorObject) -> None:
        """Mark the execution FAILED from outside (its invocations kept failing)."""

        def build(ops: dict[str, Any], _state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            exec_op = next(o for o in ops.values() if o["Type"] == "EXECUTION")
            if exec_op["Status"] in TERMINAL_STATUSES:
                return [], None
            new, _ = transition(exec_op, op_id=exec_op["Id"], op_type="EXECUTION", action="FAIL", now=now, error=error)
            rec = make_record(new, {"Error": error.to_dict()}, now, "s", None)
            return [rec], build_state(arn, exec_op, "FAILED", end=now, error=error.to_dict())

        self._mutate(arn, build)

    def link_child(self, arn: str, op_id: str, child_arn: str) -> None:
        def build(ops: dict[str, Any], _state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            op = dict(ops[op_id])
            op["_Invoke"] = {**(op.get("_Invoke") or {}), "ChildArn": child_arn}
            rec = make_record(op, {}, now, "s", None)
            rec["E"] = None
            return [rec], None

        self._mutate(arn, build)

    def complete_invoke(self, arn: str, op_id: str, *, result: str | None = None, error: Mapping[str, Any] | None = None) -> None:
        def build(ops: dict[str, Any], _state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            op = ops[op_id]
            if op["Status"] != "STARTED":
                return [], None
            if error is None:
                new, _ = transition(op, op_id=op_id, op_type="CHAINED_INVOKE", action="SUCCEED", now=now, payload=result)
            else:
                new, _ = transition(
                    op, op_id=op_id, op_type="CHAINED_INVOKE", action="FAIL", now=now, error=ErrorObject.from_dict(error)
                )
            return [make_record(new, {}, now, "s", None)], None

        self._mutate(arn, build)

    # ------------------------------------------------------------------ history
    def get_history(self, arn: str, *, include_execution_data: bool = True) -> dict[str, Any]:
        """Events in the shape of GetDurableExecutionHistory: ``{"Events": [...]}``."""
        cp = self.store.load(arn)
        return {"Events": history_events(cp.records, include_execution_data=include_execution_data)}


def execution_result(records: Any) -> str | None:
    exec_op = next((o for o in fold(records).values() if o["Type"] == "EXECUTION"), None)
    return ((exec_op or {}).get("ExecutionDetails") or {}).get("Result")


__all__ = [
    "DurableService",
    "DurableServiceError",
    "ExecutionStuckError",
    "InvocationsConflictError",
    "history_events",
    "public_op",
]
