"""The durable service's scheduler inside the local Lambda service: it invokes executions'
functions (no caller process stays up), fires their timers (waits, step retries, callback
and execution timeouts), runs chained invokes, retries crashed invocations with backoff and
deletes executions past their retention.

One thread decides, a pool runs the invocations (one at a time per execution). An
execution is re-invoked when something the service did changed it (a timer fired, a
callback completed, a chained invoke ended, it was resumed), never for a heartbeat.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from typing import Any

import attrs
import structlog

from lambdarun.errors import ExecutionNotFoundError

from lambdarun_durable.lambda_service import TERMINAL_STATUSES, ErrorObject
from lambdarun_durable.records import fold, function_ref
from lambdarun_durable.service import DurableService

log = structlog.get_logger(__name__)

#: a crashed invocation is retried after 1, 2, 4, ... seconds (capped), then the execution fails
RETRY_BASE = 1.0
RETRY_CAP = 30.0
MAX_INVOCATION_FAILURES = 6
RETENTION_SWEEP = 60.0


@attrs.define
class Active:
    """What the scheduler knows of one running execution."""

    arn: str
    function: str
    qualifier: str
    dirty: bool = True
    running: bool = False
    paused: bool = False
    next_at: float | None = None
    failures: int = 0
    #: next_at is a crashed invocation's retry (not only a timer)
    retry: bool = False
    #: a timer pass of a paused execution is running (it completes operations, invokes nothing)
    firing: bool = False
    #: the pause revoked the running invocation's token at its checkpoint (PAUSED, though its
    #: process is still returning)
    interrupted: bool = False


class Runner:
    def __init__(self, api: Any) -> None:
        #: the :class:`~lambdarun_durable.local_api.api.DurableApi` it schedules for (its
        #: store, host, execution locks, invocation events and tokens)
        self.api = api
        self.service: DurableService = api.service
        self._cond = threading.Condition()
        self._active: dict[str, Active] = {}
        self._stopping = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="durable-invoke")
        self._thread = threading.Thread(target=self._loop, name="durable-scheduler", daemon=True)
        self._next_sweep = 0.0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        # executions a previous run of a persisting service left running go on
        for cp in self.api.store.list(status="RUNNING", limit=1_000_000):
            self.activate(cp.execution_id)
            if cp.state.get("Paused"):  # paused before the restart: stays paused
                self.pause(cp.execution_id, True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ signals
    def activate(self, arn: str) -> None:
        try:
            cp = self.api.store.load(arn)
        except ExecutionNotFoundError:
            return
        exec_op = self.api.exec_op(cp)
        with self._cond:
            if arn not in self._active:
                self._active[arn] = Active(arn, cp.state.get("FunctionName") or "", exec_op.get("_Qualifier") or "$LATEST")
            self._active[arn].dirty = True
            self._cond.notify_all()

    def wake(self, arn: str) -> None:
        """The service changed the execution: invoke it (or notice that it ended)."""
        with self._cond:
            a = self._active.get(arn)
            if a is not None:
                a.dirty = True
            self._cond.notify_all()

    def retime(self, arn: str) -> None:
        """Its deadlines moved (a heartbeat): recompute when it is next due, invoke nothing."""
        with self._cond:
            a = self._active.get(arn)
            if a is not None and not a.running:
                a.next_at = self._next_due(arn)  # the heartbeat moved a callback's deadline
            self._cond.notify_all()

    def pause(self, arn: str, paused: bool) -> None:
        """Pause or resume ``arn``'s invocations. A resume invokes the function only when the
        pause interrupted an invocation or an operation completed while paused (both leave
        the execution ``dirty``); otherwise it goes on waiting for its pending operations.
        A resume while PAUSING cancels the pause: the running invocation continues."""
        with self._cond:
            a = self._active.get(arn)
            if a is not None:
                a.paused = paused
            self._cond.notify_all()

    def interrupt(self, arn: str) -> None:
        """The pause revoked the running invocation at its checkpoint: PAUSED from now, and
        the resume invokes the function again from that checkpoint."""
        with self._cond:
            a = self._active.get(arn)
            if a is not None:
                a.interrupted = a.dirty = True
            self._cond.notify_all()

    def is_running(self, arn: str) -> bool:
        """Whether an invocation of ``arn`` is running now (one the pause interrupted at its
        checkpoint no longer counts)."""
        with self._cond:
            a = self._active.get(arn)
            return a is not None and a.running and not a.interrupted

    def is_paused(self, arn: str) -> bool:
        with self._cond:
            a = self._active.get(arn)
            return a is not None and a.paused

    def forget(self, arn: str) -> None:
        with self._cond:
            self._active.pop(arn, None)
            self._cond.notify_all()

    def wait_terminal(self, arn: str, deadline: float) -> str | None:
        """Wait until the execution ends; its status, or None at ``deadline``."""
        while True:
            status = self.api.store.load_state(arn).state.get("Status")
            if status in TERMINAL_STATUSES:
                return status
            with self.service.changed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.service.changed.wait(min(remaining, 0.5))

    # ------------------------------------------------------------------ the loop
    def _next_due(self, arn: str) -> float | None:
        try:
            cp = self.api.store.load(arn)
            due = DurableService.next_due_of(fold(cp.records), cp.state)
        except ExecutionNotFoundError:
            return None
        return None if due is None else due.at

    def _loop(self) -> None:
        while not self._stopping.is_set():
            now = time.time()
            if now >= self._next_sweep:
                self._next_sweep = now + RETENTION_SWEEP
                self._pool.submit(self._sweep_retention)
            launch: list[tuple[Active, bool]] = []
            fire: list[Active] = []
            with self._cond:
                for a in list(self._active.values()):
                    if a.running or a.firing:
                        continue
                    due = a.next_at is not None and a.next_at <= now
                    if a.paused:
                        # AWS: while paused, pending waits and callbacks still complete (and an
                        # unpaused execution timeout still fires); nothing is invoked
                        if due:
                            fire.append(a)
                            a.dirty = a.dirty or a.retry  # a crashed invocation's retry is owed
                            a.firing, a.next_at, a.retry = True, None, False
                        continue
                    if a.dirty or due:
                        launch.append((a, a.dirty or (due and a.retry)))
                        a.dirty, a.running, a.next_at, a.retry = False, True, None, False
                        a.interrupted = False
                waits = [a.next_at for a in self._active.values()
                         if a.next_at is not None and not a.running and not a.firing]
                timeout = max(0.0, min(waits) - now) if waits else 1.0
                if not launch and not fire:
                    self._cond.wait(min(timeout, 1.0))
            for a, changed in launch:
                self._pool.submit(self._run, a, changed)
            for a in fire:
                self._pool.submit(self._fire_paused, a)

    def _ended(self, arn: str) -> bool:
        try:
            return self.api.store.load_state(arn).state.get("Status") in TERMINAL_STATUSES
        except ExecutionNotFoundError:
            return True

    def _done(self, a: Active, *, retry_in: float | None = None) -> None:
        """The invocation (or the timer pass) of ``a`` is over: decide when it is next due."""
        ended = self._ended(a.arn)
        with self._cond:
            a.running = False
            if ended:
                self._active.pop(a.arn, None)
            elif retry_in is not None:
                a.next_at, a.retry = time.time() + retry_in, True
            else:
                due = self._next_due(a.arn)
                a.next_at = due
            self._cond.notify_all()
        with self.service.changed:
            self.service.changed.notify_all()

    def _fire_paused(self, a: Active) -> None:
        """A paused execution's timers: operations complete (the resume then invokes)."""
        try:
            with self.api.exec_lock(a.arn):
                fired = self.service.apply_due(a.arn)
            ended = self._ended(a.arn)
            due = None if ended else self._next_due(a.arn)
        except ExecutionNotFoundError:
            self.forget(a.arn)
            return
        except Exception:  # noqa: BLE001 - the scheduler must go on
            log.exception("durable.local.paused_timers_failed", arn=a.arn)
            fired, ended, due = 0, False, time.time() + RETRY_BASE
        with self._cond:
            a.firing = False
            if ended:
                self._active.pop(a.arn, None)
            else:
                a.dirty = a.dirty or fired > 0
                a.next_at = due
            self._cond.notify_all()
        with self.service.changed:
            self.service.changed.notify_all()

    def _run(self, a: Active, changed: bool) -> None:
        """Fire what is due; invoke when that or a service change (``changed``) moved the
        execution (a timer whose deadline moved, e.g. by a heartbeat, invokes nothing)."""
        try:
            with self.api.exec_lock(a.arn):
                fired = self.service.apply_due(a.arn)
            if self._ended(a.arn) or (fired == 0 and not changed):
                self._done(a)
                return
            self._invoke(a)
        except ExecutionNotFoundError:
            self.forget(a.arn)
        except Exception:  # noqa: BLE001 - the scheduler must go on
            log.exception("durable.local.run_failed", arn=a.arn)
            self._done(a, retry_in=RETRY_BASE)

    def _invoke(self, a: Active) -> None:
        event, live = self.api.invocation_event(a.arn)
        start_ms = self.service.now_ms()
        try:
            result = self.api.host.invoke_raw(a.function, a.qualifier, json.dumps(event).encode())
        except LookupError as e:
            self.api.end_invocation(a.arn, live)
            with self.api.exec_lock(a.arn):
                self.service.fail_execution(a.arn, ErrorObject(message=str(e), type="ResourceNotFoundException",
                                                               data=None, stack_trace=None))
            self._done(a)
            return
        self.api.end_invocation(a.arn, live)
        end_ms = self.service.now_ms()
        error: dict[str, Any] | None = None
        answer: dict[str, Any] = {}
        if result.function_error:
            error = _lambda_error(result.payload)
        else:
            try:
                answer = json.loads(result.payload or b"{}")
                if not isinstance(answer, dict) or answer.get("Status") not in ("SUCCEEDED", "FAILED", "PENDING"):
                    raise ValueError(f"Status {answer.get('Status') if isinstance(answer, dict) else answer!r}")
            except ValueError as e:
                error = {"ErrorType": "InvalidDurableExecutionOutput",
                         "ErrorMessage": f"The handler's answer is not a durable invocation output: {e}"}
        with self.api.exec_lock(a.arn):
            try:
                self.service.record_invocation(a.arn, start_ms=start_ms, end_ms=end_ms,
                                               request_id=live.invocation_id, error=error)
            except ExecutionNotFoundError:
                self.forget(a.arn)
                return
            if error is not None:
                a.failures += 1
                if a.failures >= MAX_INVOCATION_FAILURES:
                    self.service.fail_execution(a.arn, ErrorObject.from_dict(error))
                    error = None
                    retry = None
                else:
                    retry = min(RETRY_CAP, RETRY_BASE * 2 ** (a.failures - 1))
                    log.info("durable.local.invocation_failed", arn=a.arn, error=error, retry_in=retry)
            else:
                a.failures = 0
                retry = None
                status = answer["Status"]
                if status == "SUCCEEDED":
                    self.service.succeed_execution(a.arn, answer.get("Result") or None)
                elif status == "FAILED":
                    err = answer.get("Error") or {"ErrorMessage": "The durable execution failed."}
                    self.service.fail_execution(a.arn, ErrorObject.from_dict(err))
        self._done(a, retry_in=retry if error is not None else None)

    # ------------------------------------------------------------------ chained invokes
    def chained_invoke(self, arn: str, op_id: str) -> None:
        self._pool.submit(self._chained, arn, op_id)

    def _chained(self, arn: str, op_id: str) -> None:
        try:
            op = fold(self.api.store.load(arn).records)[op_id]
            info = op.get("_Invoke") or {}
            target = str(info.get("FunctionName") or "")
            name, qualifier = function_ref(target)
            payload = info.get("Payload") or "{}"
            config = self.api.host.function_config(name, qualifier)
            if config is None:
                self._complete_invoke(arn, op_id, error={
                    "ErrorType": "ResourceNotFoundException", "ErrorMessage": f"Function not found: {target}"})
                return
            durable = config.get("DurableConfig")
            if durable is not None:
                child = self.api.start(
                    name, qualifier or "$LATEST", payload, name=None,
                    timeout=int(durable["ExecutionTimeout"]),  # the target's own ExecutionTimeout
                    retention=int(durable.get("RetentionPeriodInDays", 14)),
                    parent={"Arn": arn, "OperationId": op_id})
                with self.api.exec_lock(arn):
                    self.service.link_child(arn, op_id, child)
                status = self.wait_terminal(child, float("inf"))
                desc = self.api.describe(child)
                if status == "SUCCEEDED":
                    self._complete_invoke(arn, op_id, result=desc.get("Result"))
                else:
                    self._complete_invoke(arn, op_id, error=desc.get("Error") or {
                        "ErrorType": f"ChildExecution{status}", "ErrorMessage": f"The chained execution ended {status}."})
                return
            result = self.api.host.invoke_raw(name, qualifier, payload.encode())
            if result.function_error:
                self._complete_invoke(arn, op_id, error=_lambda_error(result.payload))
            else:
                self._complete_invoke(arn, op_id, result=result.payload.decode("utf-8", "replace"))
        except ExecutionNotFoundError:
            return
        except Exception as e:  # noqa: BLE001 - the invoke fails, the execution goes on
            log.exception("durable.local.chained_invoke_failed", arn=arn, op=op_id)
            self._complete_invoke(arn, op_id, error={"ErrorType": type(e).__name__, "ErrorMessage": str(e)})

    def _complete_invoke(self, arn: str, op_id: str, *, result: str | None = None,
                         error: dict[str, Any] | None = None) -> None:
        with self.api.exec_lock(arn):
            self.service.complete_invoke(arn, op_id, result=result, error=error)
        self.wake(arn)

    # ------------------------------------------------------------------ retention
    def _sweep_retention(self) -> None:
        now_ms = self.service.now_ms()
        try:
            for cp in self.api.store.list(limit=1_000_000):
                st = cp.state
                if st.get("Status") not in TERMINAL_STATUSES or st.get("EndTimestamp") is None:
                    continue
                exec_op = self.api.exec_op(self.api.store.load(cp.execution_id))
                days = int(exec_op.get("_Retention") or 14)
                if st["EndTimestamp"] + days * 86_400_000 <= now_ms:
                    self.api.store.delete(cp.execution_id)
                    log.info("durable.local.retention_deleted", arn=cp.execution_id)
        except Exception:  # noqa: BLE001
            log.exception("durable.local.retention_sweep_failed")


def _lambda_error(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload or b"{}")
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    out = {"ErrorType": str(doc.get("errorType") or "Runtime.Unknown"),
           "ErrorMessage": str(doc.get("errorMessage") or payload[:1000].decode("utf-8", "replace"))}
    if isinstance(doc.get("stackTrace"), list):
        out["StackTrace"] = [str(s) for s in doc["stackTrace"]][:50]
    return out
