"""The driver: re-invoke a durable handler until its execution ends.

:class:`Orchestrator` is the loop AWS runs for you, on top of
:class:`~lambdarun_durable.service.DurableService`: invoke, fire timers, start chained
invokes, wait for callbacks, repeat, while holding the execution's driver lease. The
engine it drives (replay, state, stores, service) does not depend on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from lambdarun.errors import CheckpointConflictError

from lambdarun_durable.lambda_service import TERMINAL_STATUSES, ErrorObject
from lambdarun_durable.lease import DriverLease, LeasePolicy, new_holder_id
from lambdarun_durable.service import (
    DurableService,
    ExecutionStuckError,
    InvocationsConflictError,
    execution_result,
)
from lambdarun_durable.records import fold, function_ref

__all__ = ["InvokeFn", "Orchestrator", "result_value"]

log = structlog.get_logger(__name__)

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
            # the child's ARN names the target's function and version (AWS's format), never its whole ARN
            target, version = function_ref(fn)
            child = self.service.start_execution(target, inv.get("Payload"), parent={"Arn": arn, "OperationId": op["Id"]},
                                                 version=version or "$LATEST")
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


def _terminal_response(state: Mapping[str, Any], records: Any = ()) -> dict[str, Any]:
    if state.get("Status") == "SUCCEEDED":
        result = execution_result(records) if state.get("ResultInRecords") else state.get("Result")
        return {"Status": "SUCCEEDED", "Result": result}
    return {"Status": "FAILED", "Error": state.get("Error") or {"ErrorMessage": f"execution {state.get('Status')}"}}


def result_value(response: Mapping[str, Any]) -> Any:
    """The Python value of a SUCCEEDED response's JSON ``Result``."""
    raw = response.get("Result")
    return None if raw in (None, "") else json.loads(raw)
