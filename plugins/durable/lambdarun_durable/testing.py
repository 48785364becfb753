"""In-process test runner (like ``aws_durable_execution_sdk_python_testing``) with time skipping.

    from lambdarun_durable.testing import DurableFunctionTestRunner

    with DurableFunctionTestRunner(handler=my_handler) as runner:
        result = runner.run(input={"order_id": "o1"})
        assert result.status is InvocationStatus.SUCCEEDED
        assert result.result_value == {...}

Waits and retry delays take no wall time: the runner's clock jumps to the next due
time. Callback deadlines are different: the runner first gives the test
``callback_grace`` real seconds to answer (``send_callback_*``); with
``callback_grace=None`` it never skips to a callback deadline by itself and time only
moves through :meth:`advance_time`.
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

from lambdarun_durable.execution import DurableInvocationInput, is_durable_handler
from lambdarun_durable.lambda_service import ErrorObject, InvocationStatus
from lambdarun_durable.history import history_events
from lambdarun_durable.orchestrator import Orchestrator
from lambdarun_durable.service import DurableService
from lambdarun_durable.records import decode_token, encode_token, fold, public_op
from lambdarun_durable.stores import SQLiteCheckpointStore


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


@dataclass
class Operation:
    """An operation of the finished execution (``operation_type``, ``status``, details)."""

    operation_id: str
    operation_type: str
    status: str
    name: str | None
    parent_id: str | None
    sub_type: str | None
    raw: dict[str, Any]
    child_operations: list[Operation] = field(default_factory=list)

    @property
    def result(self) -> Any:
        for key in ("StepDetails", "ContextDetails", "CallbackDetails", "ChainedInvokeDetails"):
            if key in self.raw:
                return self.raw[key].get("Result")
        return None

    @property
    def error(self) -> ErrorObject | None:
        for key in ("StepDetails", "ContextDetails", "CallbackDetails", "ChainedInvokeDetails"):
            err = (self.raw.get(key) or {}).get("Error")
            if err:
                return ErrorObject.from_dict(err)
        return None

    @property
    def attempt(self) -> int:
        return (self.raw.get("StepDetails") or {}).get("Attempt", 0)

    @property
    def callback_id(self) -> str | None:
        return (self.raw.get("CallbackDetails") or {}).get("CallbackId")


@dataclass
class DurableFunctionTestResult:
    status: InvocationStatus
    operations: list[Operation]
    result: str | None = None
    error: ErrorObject | None = None
    execution_arn: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    invocations: int = 0

    @property
    def result_value(self) -> Any:
        return None if self.result in (None, "") else json.loads(self.result)

    def get_all_operations(self) -> list[Operation]:
        out: list[Operation] = []
        stack = list(self.operations)
        while stack:
            op = stack.pop(0)
            out.append(op)
            stack[0:0] = op.child_operations
        return out

    def get_operation_by_name(self, name: str) -> Operation:
        for op in self.get_all_operations():
            if op.name == name:
                return op
        raise KeyError(f"no operation named {name!r}; names: {[o.name for o in self.get_all_operations()]}")

    get_step = get_wait = get_context = get_callback = get_invoke = get_operation_by_name


class DurableFunctionTestRunner:
    """Runs a ``@durable_execution`` handler to completion in this process."""

    def __init__(
        self,
        handler: Callable,
        *,
        store: Any = None,
        skip_time: bool = True,
        callback_grace: float | None = 0.5,
        batch_records: int = 1000,
        checkpoint_batching: bool = False,
        function_name: str = "test-function",
    ) -> None:
        if not is_durable_handler(handler):
            raise TypeError("handler must be decorated with @durable_execution")
        self._tmp = None
        if store is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lambdarun-durable-")
            store = SQLiteCheckpointStore(f"{self._tmp.name}/durable.db", synchronous="NORMAL")
        self.store = store
        self.clock = VirtualClock() if skip_time else time.time
        self.skip_time = skip_time
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

    # -- registration
    def register_durable_function(self, function_name: str, handler: Callable) -> DurableFunctionTestRunner:
        """Make ``context.invoke(function_name, ...)`` run ``handler`` as a chained execution."""
        self.functions[function_name] = handler
        return self

    # -- lifecycle
    def __enter__(self) -> DurableFunctionTestRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
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
            callback_grace=self.callback_grace,
        )
        return orch

    def run_async(
        self, input: Any = None, *, execution_name: str | None = None, execution_timeout: int | None = None  # noqa: A002
    ) -> str:
        """Start an execution and drive it in a background thread; return its ARN."""
        payload = input if isinstance(input, str) or input is None else json.dumps(input)
        arn = self.service.start_execution(
            self.function_name, payload, execution_name=execution_name, execution_timeout=execution_timeout
        )
        orch = self._orchestrator()
        self._orchestrators[arn] = orch

        def drive() -> None:
            try:
                self._results[arn] = orch.run(self.function_name, arn)
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
        *,
        timeout: float = 60,
        execution_name: str | None = None,
        execution_timeout: int | None = None,
    ) -> DurableFunctionTestResult:
        """Start an execution and wait up to ``timeout`` s for its end (``input``: JSON string or value)."""
        arn = self.run_async(input, execution_name=execution_name, execution_timeout=execution_timeout)
        return self.wait_for_result(arn, timeout=timeout)

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
        ops = fold(cp.records)
        by_parent: dict[str | None, list[Operation]] = {}
        for op in ops.values():
            if op["Type"] == "EXECUTION":
                continue
            by_parent.setdefault(op.get("ParentId"), []).append(
                Operation(
                    operation_id=op["Id"],
                    operation_type=op["Type"],
                    status=op["Status"],
                    name=op.get("Name"),
                    parent_id=op.get("ParentId"),
                    sub_type=op.get("SubType"),
                    raw=public_op(op),
                )
            )
        for children in by_parent.values():
            for o in children:
                o.child_operations = by_parent.get(o.operation_id, [])
        response = self._results.get(arn) or {}
        st = cp.state
        status = st.get("Status")
        result = response.get("Result") if response.get("Result") not in (None, "") else st.get("Result")
        error = response.get("Error") or st.get("Error")
        orch = self._orchestrators.get(arn)
        return DurableFunctionTestResult(
            status=InvocationStatus.SUCCEEDED if status == "SUCCEEDED" else InvocationStatus.FAILED
            if status in ("FAILED", "STOPPED", "TIMED_OUT")
            else InvocationStatus.PENDING,
            operations=by_parent.get(None, []),
            result=result,
            error=ErrorObject.from_dict(error) if error else None,
            execution_arn=arn,
            history=history_events(cp.records),
            invocations=orch.invocations if orch else 0,
        )

    # -- callbacks and history
    def send_callback_success(self, callback_id: str, result: str | bytes | None = None) -> None:
        self.service.send_callback_success(callback_id, result)

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


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)
