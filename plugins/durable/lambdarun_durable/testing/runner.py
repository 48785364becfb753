"""The in-process test runners: a ``@durable_execution`` handler run to its end in this process.

``DurableFunctionTestRunner`` and ``DurableChildContextTestRunner`` (AWS's testing
package's names and signatures) drive executions through lambdarun's durable service on
a checkpoint store, under a virtual clock that skips waits and retry delays.
"""

from __future__ import annotations

import datetime
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambdarun_durable.execution import DurableInvocationInput, durable_execution, is_durable_handler
from lambdarun_durable.history import history_events
from lambdarun_durable.lambda_service import ErrorObject, InvocationStatus
from lambdarun_durable.orchestrator import Orchestrator
from lambdarun_durable.records import decode_token, encode_token, fold, public_op
from lambdarun_durable.service import DurableService
from lambdarun_durable.stores import SQLiteCheckpointStore
from lambdarun_durable.testing.exceptions import RunnerClosedError
from lambdarun_durable.testing.results import DurableFunctionTestResult, ExecutionStatus


class VirtualClock:
    """A clock that starts at real time and only moves forward when told to."""

    def __init__(self, start: float | None = None) -> None:
        self._now = start if start is not None else time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def advance_to(self, t: float) -> None:
        with self._lock:
            self._now = max(self._now, t)


@dataclass
class TestLambdaContext:
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "test-function"
    invoked_function_arn: str = ""
    memory_limit_in_mb: str = "1024"
    log_group_name: str | None = None
    log_stream_name: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        return 900_000



class DurableFunctionTestRunner:
    """Runs a ``@durable_execution`` handler to completion in this process."""

    def __init__(
        self,
        handler: Callable,
        poll_interval: float = 0.01,
        max_invocation_page_bytes: int | None = None,
        execution_timeout: int | None = None,
        invocation_timeout: int = 900,
        store: Any = None,
        skip_time: bool = True,  # noqa: FBT001, FBT002 - AWS's signature
        region: str = "us-west-2",
        *,
        callback_grace: float | None = 0.5,
        batch_records: int = 1000,
        checkpoint_batching: bool = False,
        function_name: str = "test-function",
    ) -> None:
        """Arguments up to ``region`` are AWS's runner's, in its order.

        ``execution_timeout``: the default of :meth:`run`'s (AWS's runner: 300; here none,
        so an execution waiting on a callback without deadlines waits until answered).
        ``max_invocation_page_bytes`` is accepted and unused (operations are handed over
        in-process). ``store``: a lambdarun checkpoint store (default: SQLite in a temporary
        folder, ``synchronous=NORMAL``). ``callback_grace``: real seconds the test gets to
        answer a callback before the virtual clock skips to its deadline (None: never).
        ``checkpoint_batching``: batch checkpoints instead of committing every operation.
        """
        if not is_durable_handler(handler):
            raise TypeError("handler must be decorated with @durable_execution")
        self._tmp = None
        if store is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lambdarun-durable-")
            store = SQLiteCheckpointStore(f"{self._tmp.name}/durable.db", synchronous="NORMAL")
        self.store = store
        self.clock = VirtualClock() if skip_time else time.time
        self.skip_time = skip_time
        self.poll_interval = poll_interval
        self.execution_timeout = execution_timeout
        self.invocation_timeout = invocation_timeout
        self.region = region
        self.max_invocation_page_bytes = max_invocation_page_bytes
        self.service = DurableService(store, clock=self.clock)
        self.function_name = function_name
        self.functions: dict[str, Callable] = {function_name: handler}
        self.batch_records = batch_records
        self.checkpoint_batching = checkpoint_batching
        self.callback_grace = callback_grace
        self._threads: dict[str, threading.Thread] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._errors: dict[str, BaseException] = {}
        self._orchestrators: dict[str, Orchestrator] = {}
        self._closed = False

    # -- registration
    def register_durable_function(
        self, function_name: str, handler: Callable, execution_timeout: int | None = None, retention_period_days: int = 7
    ) -> DurableFunctionTestRunner:
        """Make ``context.invoke(function_name, ...)`` run ``handler`` as a chained execution.

        ``execution_timeout``/``retention_period_days`` are accepted for AWS's signature; the
        child runs under the runner's clock (its timeout is the service's to enforce).
        """
        if not is_durable_handler(handler):
            raise TypeError("register_durable_function needs a @durable_execution handler; use register_function")
        self.functions[function_name] = handler
        return self

    def register_function(self, function_name: str, handler: Callable) -> DurableFunctionTestRunner:
        """Make ``context.invoke(function_name, ...)`` call a plain (non-durable) ``handler``.

        It is called once with the JSON-decoded payload and a test Lambda context; its JSON
        result is the invoke's result.
        """

        @durable_execution
        def plain(event: Any, _ctx: Any) -> Any:
            return handler(event, TestLambdaContext(function_name=function_name))

        self.functions[function_name] = plain
        return self

    # -- lifecycle
    def __enter__(self) -> DurableFunctionTestRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        with self.service.changed:
            self.service.changed.notify_all()  # drivers waiting on a callback end
        for t in self._threads.values():
            t.join(timeout=10)
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- time
    def advance_time(self, seconds: float) -> None:
        """Move the virtual clock forward (skip_time mode) and wake the driver."""
        if isinstance(self.clock, VirtualClock):
            self.clock.advance(seconds)
        with self.service.changed:
            self.service.changed.notify_all()

    def _sleep_until(self, t: float) -> None:
        if isinstance(self.clock, VirtualClock):
            self.clock.advance_to(t)
        else:
            time.sleep(max(0.0, t - time.time()))

    # -- invoking
    def invoke_function(
        self, function_name: str, event: dict[str, Any], orchestrator: Orchestrator | None = None
    ) -> dict[str, Any]:
        handler = self.functions.get(function_name)
        if handler is None:
            return {
                "Status": "FAILED",
                "Error": {
                    "ErrorType": "ResourceNotFoundException",
                    "ErrorMessage": f"Function not found: {function_name}; register it with register_durable_function()",
                },
            }
        token = decode_token(event["CheckpointToken"])
        if token["s"] != self.store.url:
            raise ValueError(f"event for store {token['s']!r}, runner uses {self.store.url!r}")
        inv = DurableInvocationInput(
            durable_execution_arn=event["DurableExecutionArn"],
            checkpoint_token=event["CheckpointToken"],
            operations=None if event["InitialExecutionState"].get("NextMarker") else event["InitialExecutionState"]["Operations"],
            store=self.store,
            clock=self.clock,
            batch_records=self.batch_records,
            batching=self.checkpoint_batching,
            updated_operation_ids=list(event.get("UpdatedOperationIds") or []),
        )
        current = orchestrator.current if orchestrator is not None else None
        if inv.operations is None and current and current[0] == inv.durable_execution_arn:
            inv.operations = list(fold(current[1].records).values())  # skip the reload
            inv.checkpoint_token = encode_token(self.store.url, current[1].version, token["i"])
        return handler(inv, TestLambdaContext(function_name=function_name))

    def _orchestrator(self) -> Orchestrator:
        orch = Orchestrator(
            self.service,
            lambda name, event: self.invoke_function(name, event, orch),
            sleep_until=self._sleep_until,
            wait_external=lambda timeout: self._wait_for_work(orch, timeout),
            callback_grace=self.callback_grace,
        )
        return orch

    def _wait_for_work(self, orch: Orchestrator, timeout: float | None) -> bool:
        """Block until the suspended execution has something to do; True if it has.

        Something to do: the service completed an operation since the last invocation
        loaded it (a callback answered or failed, a chained invoke ended), the execution
        was closed (stopped), or a timer is due on the runner's clock (``advance_time``).
        A heartbeat only moves a deadline and wakes nothing, so a callback that waits for
        minutes costs no invocation until it is answered or a deadline passes. ``timeout``
        None waits for as long as it takes.
        """
        if orch.current is None:
            return True
        arn, loaded = orch.current
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.service.changed:
            while True:
                if self._closed:
                    raise RunnerClosedError("the test runner was closed while the execution waited")
                if self._has_work(arn, loaded.version):
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.service.changed.wait(remaining)

    def _has_work(self, arn: str, version: int) -> bool:
        cp = self.store.load(arn)
        ops = fold(cp.records)
        for op in ops.values():
            if op["Type"] == "EXECUTION" and op["Status"] not in ("STARTED", "PENDING", "READY"):
                return True
        for rec in cp.records:
            op = rec.get("Op")
            if rec.get("V", 0) > version and rec.get("S") == "s" and op is not None:
                if op["Status"] not in ("STARTED", "PENDING"):
                    return True
        due = self.service.next_due_of(ops)
        return due is not None and due.at <= self.clock()

    def _execution_timeout(self, execution_timeout: int | None, timeout: int | None) -> int | None:
        """``execution_timeout``, else AWS's deprecated ``timeout``, else the runner's default."""
        if execution_timeout is not None:
            return execution_timeout
        return timeout if timeout is not None else self.execution_timeout

    def run_async(
        self,
        input: Any = None,  # noqa: A002
        execution_timeout: int | None = None,
        timeout: int | None = None,
        function_name: str | None = None,
        execution_name: str | None = None,
        account_id: str | None = None,
        tenant_id: str | None = None,
    ) -> str:
        """Start an execution and drive it in a background thread; return its ARN.

        ``input`` is encoded as AWS's runner does: a string that is already JSON is sent
        as is, anything else (a plain string, a dict, None) is JSON-encoded. ``timeout`` is
        AWS's deprecated name of ``execution_timeout``. ``account_id``/``tenant_id`` are
        accepted for AWS's signature.
        """
        execution_timeout = self._execution_timeout(execution_timeout, timeout)
        fn = function_name or self.function_name
        if fn not in self.functions:
            self.functions[fn] = self.functions[self.function_name]
        arn = self.service.start_execution(
            fn, normalize_input(input), execution_name=execution_name, execution_timeout=execution_timeout
        )
        orch = self._orchestrator()
        self._orchestrators[arn] = orch

        def drive() -> None:
            try:
                self._results[arn] = orch.run(fn, arn)
            except BaseException as e:  # noqa: BLE001
                self._errors[arn] = e
            finally:
                with self.service.changed:
                    self.service.changed.notify_all()

        t = threading.Thread(target=drive, name=f"durable-driver-{arn[-8:]}", daemon=True)
        self._threads[arn] = t
        t.start()
        return arn

    def run(
        self,
        input: Any = None,  # noqa: A002
        execution_timeout: int | None = None,
        timeout: int | None = None,
        function_name: str | None = None,
        execution_name: str | None = None,
        account_id: str | None = None,
        tenant_id: str | None = None,
        *,
        wait_timeout: float | None = None,
    ) -> DurableFunctionTestResult:
        """Start an execution and wait for its end (AWS's signature; see :meth:`run_async`).

        The real-time wait is ``wait_timeout`` seconds, by default the execution timeout
        (as AWS's runner waits), or 60 s when the execution has none.
        """
        execution_timeout = self._execution_timeout(execution_timeout, timeout)
        arn = self.run_async(
            input, execution_timeout=execution_timeout, function_name=function_name, execution_name=execution_name,
            account_id=account_id, tenant_id=tenant_id,
        )
        if wait_timeout is None:
            wait_timeout = max(float(execution_timeout or 60), 60.0)
        return self.wait_for_result(arn, timeout=wait_timeout)

    def wait_for_result(self, execution_arn: str, timeout: float = 60) -> DurableFunctionTestResult:
        t = self._threads.get(execution_arn)
        if t is not None:
            t.join(timeout)
            if t.is_alive():
                raise TimeoutError(f"Execution {execution_arn} did not complete within {timeout}s")
        if execution_arn in self._errors:
            raise self._errors[execution_arn]
        return self._result(execution_arn)

    def _result(self, arn: str) -> DurableFunctionTestResult:
        cp = self.store.load(arn)
        response = self._results.get(arn) or {}
        st = cp.state
        status = st.get("Status")
        return DurableFunctionTestResult.from_operations(
            [public_op(op) for op in fold(cp.records).values()],
            history_events(cp.records),
            status=InvocationStatus.SUCCEEDED if status == "SUCCEEDED" else InvocationStatus.FAILED
            if status in ("FAILED", "STOPPED", "TIMED_OUT")
            else InvocationStatus.PENDING,
            execution_status=ExecutionStatus[status] if status in ExecutionStatus.__members__ else ExecutionStatus.RUNNING,
            result=response.get("Result") if response.get("Result") not in (None, "") else st.get("Result"),
            error=response.get("Error") or st.get("Error"),
            execution_arn=arn,
        )

    # -- callbacks and history
    def send_callback_success(self, callback_id: str, result: str | bytes | None = None) -> None:
        """Complete a callback; an empty result is no result (``Callback.result()`` is None), as in AWS's runner."""
        self.service.send_callback_success(callback_id, result or None)

    def send_callback_failure(self, callback_id: str, error: ErrorObject | dict | None = None) -> None:
        self.service.send_callback_failure(callback_id, error)

    def send_callback_heartbeat(self, callback_id: str) -> None:
        self.service.send_callback_heartbeat(callback_id)

    def get_execution_history(self, execution_arn: str, include_execution_data: bool = True) -> dict[str, Any]:
        return self.service.get_history(execution_arn, include_execution_data=include_execution_data)

    def wait_for_callback(self, execution_arn: str, name: str | None = None, timeout: float = 30) -> str:
        """Block until a CallbackStarted event (optionally with ``name``) appears; return its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in reversed(self.service.get_history(execution_arn)["Events"]):
                if ev["EventType"] == "CallbackStarted" and (name is None or ev.get("Name") == name):
                    cb_id = ev["CallbackStartedDetails"]["CallbackId"]
                    op = self.service.operations(execution_arn).get(ev["Id"])
                    if op and op["Status"] == "STARTED":
                        return cb_id
            if execution_arn in self._results or execution_arn in self._errors:
                break
            time.sleep(0.01)
        raise TimeoutError(f"No pending callback{f' named {name!r}' if name else ''} in {execution_arn}")


class DurableChildContextTestRunner(DurableFunctionTestRunner):
    """Test a ``@durable_with_child_context`` block in isolation (AWS testing package's runner)."""

    def __init__(self, context_function: Callable[..., Any], *args: Any, skip_time: bool = True, **kwargs: Any) -> None:
        @durable_execution
        def handler(event: Any, context: Any) -> Any:
            return context_function(*args, **kwargs)(context)

        super().__init__(handler, skip_time=skip_time)



def normalize_input(value: Any) -> str:
    """The execution's input payload as AWS's runner makes it (``get_normalized_input``)."""
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except json.JSONDecodeError:
            pass
    return json.dumps(value)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)
