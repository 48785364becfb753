"""The service side: executions, timers, callbacks, history, and the orchestrator loop.

This is what AWS runs for you: it creates executions, fires timers (waits, step
retries, callback timeouts), accepts callback results, links chained invokes, and
re-invokes the handler when something it waits for is done.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import structlog

from lambdarun.errors import CheckpointConflictError, LambdarunError

from lambdarun_durable.lambda_service import TERMINAL_STATUSES, ErrorObject
from lambdarun_durable.lease import DriverLease, LeasePolicy, new_holder_id
from lambdarun_durable.state import (
    build_state,
    decode_callback_id,
    encode_token,
    fold,
    make_arn,
    make_record,
    public_op,
    transition,
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


def _dt(ms: int | None) -> datetime.datetime | None:
    return None if ms is None else datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


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
    ) -> str:
        """Create an execution (status RUNNING, ExecutionStarted event); return its ARN.

        ``execution_timeout`` (seconds) is enforced: past it the execution is TIMED_OUT.
        """
        name = execution_name or str(uuid.uuid4())
        arn = make_arn(function_name, name, self.region, self.account)
        now = self.now_ms()
        op, extra = transition(
            None, op_id=str(uuid.uuid4()), op_type="EXECUTION", action="START", now=now, name=name,
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
            "StartTimestamp": _dt(st.get("StartTimestamp")),
        }
        if st.get("EndTimestamp") is not None:
            out["EndTimestamp"] = _dt(st["EndTimestamp"])
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
                    "StartTimestamp": _dt(st.get("StartTimestamp")),
                    **({"EndTimestamp": _dt(st["EndTimestamp"])} if st.get("EndTimestamp") else {}),
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

        def build(ops: dict[str, Any], _state: Mapping[str, Any], now: int) -> tuple[list, Any]:
            recs = []
            for op in ops.values():
                if op["Type"] == "EXECUTION" and op["Status"] == "STARTED" and op.get("_TimeoutAt") and op["_TimeoutAt"] <= now:
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
    def next_due_of(ops: Mapping[str, Mapping[str, Any]]) -> Due | None:
        times: list[tuple[float, bool]] = []
        for op in ops.values():
            t, s = op["Type"], op["Status"]
            if t == "EXECUTION" and s == "STARTED" and op.get("_TimeoutAt"):
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


def _payload(value: Any, include: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"Truncated": not include}
    if include and value is not None:
        out["Payload"] = value
    return out


def history_events(records: Any, *, include_execution_data: bool = True) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    records = list(records)
    latest = fold(records)
    for rec in records:
        etype = rec.get("E")
        if not etype:
            continue
        x = rec.get("X") or {}
        ev: dict[str, Any] = {"EventType": etype, "EventTimestamp": _dt(rec["T"]), "EventId": len(events) + 1}
        op = rec.get("Op")
        if op is not None:
            if op.get("SubType"):
                ev["SubType"] = op["SubType"]
            ev["Id"] = op["Id"]
            if op.get("Name"):
                ev["Name"] = op["Name"]
            if op.get("ParentId"):
                ev["ParentId"] = op["ParentId"]
        details: dict[str, Any] = {}
        kind = op["Type"] if op else None
        dkey = {
            "STEP": "StepDetails", "CONTEXT": "ContextDetails", "CALLBACK": "CallbackDetails",
            "CHAINED_INVOKE": "ChainedInvokeDetails",
        }.get(kind or "")
        d = (op or {}).get(dkey or "", {}) or {}
        if etype == "ExecutionStarted":
            details = {"Input": _payload(x.get("Input"), include_execution_data)}
            if x.get("ExecutionTimeout"):
                details["ExecutionTimeout"] = x["ExecutionTimeout"]
        elif etype == "ExecutionSucceeded":
            result = x.get("Result", ((op or {}).get("ExecutionDetails") or {}).get("Result"))
            details = {"Result": _payload(result, include_execution_data)}
        elif etype in ("ExecutionFailed", "ExecutionStopped", "ExecutionTimedOut"):
            error = x.get("Error", ((op or {}).get("ExecutionDetails") or {}).get("Error"))
            details = {"Error": _payload(error, include_execution_data)}
        elif etype in ("StepStarted", "ContextStarted"):
            details = {}
        elif etype.endswith("Succeeded") and kind in ("STEP", "CONTEXT", "CALLBACK", "CHAINED_INVOKE"):
            # a retry's event carries no result (the polled state stays in the operation)
            details = {"Result": _payload(None if x.get("Retry") else d.get("Result"), include_execution_data)}
            if x.get("RetryDetails"):
                details["RetryDetails"] = x["RetryDetails"]
        elif etype.endswith(("Failed", "TimedOut", "Stopped")) and kind in ("STEP", "CONTEXT", "CALLBACK", "CHAINED_INVOKE"):
            details = {"Error": _payload(d.get("Error"), include_execution_data)}
            if x.get("RetryDetails"):
                details["RetryDetails"] = x["RetryDetails"]
        elif etype == "WaitStarted":
            details = {"Duration": x.get("Duration"), "ScheduledEndTimestamp": _dt(x.get("ScheduledEndTimestamp"))}
        elif etype == "WaitSucceeded":
            details = {"Duration": x.get("Duration")}
        elif etype == "CallbackStarted":
            details = {k: x[k] for k in ("CallbackId", "HeartbeatTimeout", "Timeout") if k in x}
        elif etype == "ChainedInvokeStarted":
            details = {"FunctionName": x.get("FunctionName")}
            if x.get("Input") is not None:
                details["Input"] = _payload(x.get("Input"), include_execution_data)
            child = ((latest.get(op["Id"]) or {}).get("_Invoke") or {}).get("ChildArn") if op else None
            if child:
                details["DurableExecutionArn"] = child
        elif etype == "InvocationCompleted":
            details = {
                "StartTimestamp": _dt(x.get("StartTimestamp")),
                "EndTimestamp": _dt(x.get("EndTimestamp")),
                "RequestId": x.get("RequestId"),
            }
        ev[f"{etype}Details"] = details
        events.append(ev)
    return events


# =====================================================================================
# Orchestrator
# =====================================================================================

InvokeFn = Callable[[str, dict[str, Any]], dict[str, Any]]


class Orchestrator:
    """Drives executions to completion: invoke, fire timers, start chained invokes, repeat.

    ``invoke(function_name, event)`` runs one invocation and returns its response dict.
    ``sleep_until(t)`` waits until the service clock reaches ``t`` (a virtual clock just
    jumps). ``wait_external(timeout)`` blocks until a callback/heartbeat arrives or the
    timeout passes; it returns True if something arrived.

    One driver per execution: :meth:`run` holds the execution's lease in the store
    (:class:`~lambdarun_durable.lease.DriverLease`, ``lease`` policy) while it drives, so a
    second orchestrator waits or gets :class:`~lambdarun.errors.LeaseHeldError`. An
    invocation that fails with a checkpoint conflict (another writer got there first) is
    re-invoked from the stored state and never counts toward failing the execution.
    """

    def __init__(
        self,
        service: DurableService,
        invoke: InvokeFn,
        *,
        sleep_until: Callable[[float], None] | None = None,
        wait_external: Callable[[float | None], bool] | None = None,
        callback_grace: float | None = 0.5,
        max_invocation_retries: int = 3,
        realtime: bool = False,
        lease: LeasePolicy | None = None,
        max_conflict_retries: int = 20,
    ) -> None:
        self.service = service
        self.invoke = invoke
        self.sleep_until = sleep_until or (lambda t: time.sleep(max(0.0, t - service.clock())))
        self.wait_external = wait_external or self._wait_changed
        self.callback_grace = callback_grace
        self.max_invocation_retries = max_invocation_retries
        self.realtime = realtime
        self.invocations = 0
        self.current: tuple[str, Any] | None = None
        self.lease_policy = lease or LeasePolicy()
        self.max_conflict_retries = max_conflict_retries
        #: this driver's lease holder id (host/pid/random), the same for its chained children
        self.holder = new_holder_id()
        #: seconds the last run() waited for the lease
        self.lease_waited = 0.0

    def _wait_changed(self, timeout: float | None) -> bool:
        with self.service.changed:
            return self.service.changed.wait(timeout=timeout if timeout is not None else 1.0)

    def start(self, function_name: str, input_payload: str | None = None, *, execution_name: str | None = None) -> str:
        return self.service.start_execution(function_name, input_payload, execution_name=execution_name)

    def run(self, function_name: str, arn: str) -> dict[str, Any]:
        """Invoke until SUCCEEDED/FAILED/STOPPED; return the final response dict.

        A finished execution returns its end at once (no lease, nothing invoked); otherwise
        the execution's lease is held from the first to the last store write of this run.
        """
        done = self._terminal(arn)
        if done is not None:
            return done
        lease = DriverLease(self.service.store, arn, self.lease_policy, self.holder)
        with lease:
            self.lease_waited = lease.waited
            return self._drive(function_name, arn, lease)

    def _terminal(self, arn: str) -> dict[str, Any] | None:
        store = self.service.store
        state = (store.load_state(arn) if hasattr(store, "load_state") else store.load(arn)).state
        if state.get("Status") not in TERMINAL_STATUSES:
            return None
        records = store.load(arn).records if state.get("ResultInRecords") else ()
        return _terminal_response(state, records)

    def _drive(self, function_name: str, arn: str, lease: DriverLease) -> dict[str, Any]:
        service = self.service
        failures = 0
        conflicts = 0
        while True:
            lease.check()
            service.apply_due(arn)
            event, cp = service.invocation_event(arn)
            exec_op = next((o for o in fold(cp.records).values() if o["Type"] == "EXECUTION"), None)
            if exec_op is not None and exec_op["Status"] in TERMINAL_STATUSES:
                return _terminal_response(cp.state, cp.records)
            v0 = cp.version
            lease.check()  # never invoke without holding the lease
            self.invocations += 1
            self.current = (arn, cp)  # in-process invokers may reuse the loaded operations
            try:
                response = self.invoke(function_name, event)
            except CheckpointConflictError as e:
                # another writer checkpointed first (an invocation a dead driver left running):
                # what is stored stays; re-invoke from it, never fail the execution for it
                conflicts += 1
                log.warning("durable.invocation.conflict", arn=arn, error=str(e), attempt=conflicts)
                if conflicts > self.max_conflict_retries:
                    raise InvocationsConflictError(
                        f"{conflicts} invocations of {arn} in a row lost checkpoint conflicts to another "
                        "writer; the execution is left as stored (not failed). Resume it later with "
                        "`lambdarun durable resume ARN`."
                    ) from e
                time.sleep(min(0.05 * 2 ** min(conflicts, 6), 2.0))  # backoff: let the other writer end
                continue
            except Exception as e:  # noqa: BLE001 - the invocation failed: Lambda-style retry
                failures += 1
                log.warning("durable.invocation.failed", arn=arn, error=str(e), attempt=failures)
                if failures > self.max_invocation_retries:
                    err = ErrorObject.from_exception(e)
                    err = ErrorObject(
                        message=f"invocation failed {failures} times; last error: {err.message}",
                        type=err.type, data=None, stack_trace=None,
                    )
                    service.fail_execution(arn, err)
                    return {"Status": "FAILED", "Error": err.to_dict()}
                continue
            failures = 0
            conflicts = 0
            status = response.get("Status")
            if status in ("SUCCEEDED", "FAILED"):
                return response
            lease.check()  # no service work (timers, chained invokes) without the lease
            self._start_chained_invokes(arn)
            cp = service.store.load(arn)
            if self._has_unseen_updates(cp, v0):
                continue
            ops = fold(cp.records)
            if self._any_ready(ops):
                continue
            due = service.next_due_of(ops)
            waiting_callbacks = any(o["Type"] == "CALLBACK" and o["Status"] == "STARTED" for o in ops.values())
            if self.realtime:
                # wall clock: wait until the next timer, waking early when a callback arrives
                if due is None and not waiting_callbacks:
                    raise ExecutionStuckError(
                        f"Execution {arn} returned PENDING but waits for nothing (no timer, retry, "
                        "callback or chained invoke)."
                    )
                self.wait_external(None if due is None else max(0.0, due.at - service.clock()))
                continue
            if due is None:
                if not waiting_callbacks:
                    raise ExecutionStuckError(
                        f"Execution {arn} returned PENDING but waits for nothing (no timer, retry, "
                        "callback or chained invoke)."
                    )
                self.wait_external(None)
                continue
            if due.callbacks_only and self.callback_grace is not None:
                if self.wait_external(self.callback_grace):
                    continue
            elif due.callbacks_only and self.callback_grace is None:
                self.wait_external(None)
                continue
            self.sleep_until(due.at)

    def _any_ready(self, ops: Mapping[str, Mapping[str, Any]]) -> bool:
        return any(o["Type"] == "STEP" and o["Status"] == "READY" for o in ops.values())

    def _has_unseen_updates(self, cp: Any, v0: int) -> bool:
        for rec in cp.records:
            if rec.get("V", 0) > v0 and rec.get("S") == "s" and rec.get("Op") is not None:
                op = rec["Op"]
                if op["Status"] in TERMINAL_STATUSES or op["Status"] == "READY":
                    return True
        return False

    def _start_chained_invokes(self, arn: str) -> None:
        for op in list(self.service.operations(arn).values()):
            if op["Type"] != "CHAINED_INVOKE" or op["Status"] != "STARTED":
                continue
            inv = op.get("_Invoke") or {}
            if inv.get("ChildArn"):
                continue
            fn = inv.get("FunctionName")
            child = self.service.start_execution(fn, inv.get("Payload"), parent={"Arn": arn, "OperationId": op["Id"]})
            self.service.link_child(arn, op["Id"], child)
            try:
                response = self.run(fn, child)
            except Exception as e:  # noqa: BLE001
                response = {"Status": "FAILED", "Error": ErrorObject.from_exception(e).to_dict()}
            if response.get("Status") == "SUCCEEDED":
                result = response.get("Result")
                if result == "":
                    result = self.service.describe(child).get("Result")
                self.service.complete_invoke(arn, op["Id"], result=result)
            else:
                self.service.complete_invoke(arn, op["Id"], error=response.get("Error") or {"ErrorMessage": "failed"})


def execution_result(records: Any) -> str | None:
    exec_op = next((o for o in fold(records).values() if o["Type"] == "EXECUTION"), None)
    return ((exec_op or {}).get("ExecutionDetails") or {}).get("Result")


def _terminal_response(state: Mapping[str, Any], records: Any = ()) -> dict[str, Any]:
    if state.get("Status") == "SUCCEEDED":
        result = execution_result(records) if state.get("ResultInRecords") else state.get("Result")
        return {"Status": "SUCCEEDED", "Result": result}
    return {"Status": "FAILED", "Error": state.get("Error") or {"ErrorMessage": f"execution {state.get('Status')}"}}


def result_value(response: Mapping[str, Any]) -> Any:
    """The Python value of a SUCCEEDED response's JSON ``Result``."""
    raw = response.get("Result")
    return None if raw in (None, "") else json.loads(raw)


__all__ = [
    "DurableService",
    "DurableServiceError",
    "ExecutionStuckError",
    "InvocationsConflictError",
    "Orchestrator",
    "history_events",
    "public_op",
    "result_value",
]
