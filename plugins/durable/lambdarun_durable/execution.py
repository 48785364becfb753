"""``@durable_execution``: the handler wrapper that replays, runs and checkpoints.

Invocation event (AWS shape)::

    {"DurableExecutionArn": "arn:aws:lambda:...:function:f:$LATEST/durable-execution/name/id",
     "CheckpointToken": "<opaque: store URL + version + invocation id>",
     "InitialExecutionState": {"Operations": [...], "NextMarker": ""}}

``NextMarker`` non-empty means "the operations did not fit: load them from the store".
Response: ``{"Status": "SUCCEEDED"|"FAILED"|"PENDING", "Result"?: str, "Error"?: {...}}``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from lambdarun.errors import CheckpointError as StoreCheckpointError

from lambdarun_durable.context import DurableContext
from lambdarun_durable.exceptions import (
    ExecutionError,
    InvocationError,
    SuspendExecution,
)
from lambdarun_durable.instrumentation import DurableInstrumentationPluginFactory, PluginExecutor
from lambdarun_durable.lambda_service import (
    DurableExecutionInvocationOutput,
    ErrorObject,
    InvocationStatus,
)
from lambdarun_durable.plugin_discovery import load_configured_plugins
from lambdarun_durable.plugin_views import Operation
from lambdarun_durable.state import (
    ExecutionClosed,
    ExecutionState,
    build_state,
    decode_token,
    fold,
    make_record,
    transition,
)

log = structlog.get_logger(__name__)

LAMBDA_RESPONSE_SIZE_LIMIT = 6 * 1024 * 1024 - 50


@dataclass
class DurableInvocationInput:
    """An invocation handed over in-process (test runner, in-process orchestrator).

    ``store`` and ``clock`` replace what the token and the wall clock give a Lambda.
    """

    durable_execution_arn: str
    checkpoint_token: str
    operations: list[dict[str, Any]] | None = None
    store: Any = None
    clock: Callable[[], float] = time.time
    batch_records: int = 1000
    batch_age: float = 1.0
    #: False: commit each operation's outcome before it returns (AWS's SDK); True: batch
    batching: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: operations the service changed while the execution was suspended (AWS's
    #: ``UpdatedOperationIds``): instrumentation plugins see them as updates, not replays
    updated_operation_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> DurableInvocationInput:
        try:
            arn = event["DurableExecutionArn"]
            token = event["CheckpointToken"]
        except (KeyError, TypeError) as e:
            raise ExecutionError(
                "Unexpected payload provided to start the durable execution: a durable handler needs "
                "DurableExecutionArn and CheckpointToken. Start it through lambdarun's durable "
                "orchestrator (lambdarun.run(..., backend='durable') or DurableService)."
            ) from e
        initial = event.get("InitialExecutionState") or {}
        ops = None if initial.get("NextMarker") else list(initial.get("Operations") or [])
        return cls(
            durable_execution_arn=arn,
            checkpoint_token=token,
            operations=ops,
            updated_operation_ids=list(event.get("UpdatedOperationIds") or []),
        )


_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()


def _open_store(url: str) -> Any:
    from lambdarun_durable.stores import open_store

    with _STORES_LOCK:
        store = _STORES.get(url)
        if store is None:
            store = _STORES[url] = open_store(url)
        return store


_GC_LOCK = threading.Lock()
_GC_ACTIVE = 0  # invocations running in this process under _gc_scope's freeze


@contextlib.contextmanager
def _gc_scope() -> Any:
    """Keep the host process's existing objects out of the invocation's garbage collections.

    Each step leaves a few objects alive (its operation snapshot, buffered records), so a long
    invocation crosses CPython's full-collection threshold and a full collection walks every
    tracked object of the process (for a test process with boto3, moto and pytest loaded,
    ~80k objects: 35-50 ms each). That made a 10,000-step invocation pay ~4 us per step more
    than a 1,000-step one (which rarely crosses the threshold). Freezing the objects that
    existed before the invocation (``gc.freeze``, an O(1) list move) confines its collections
    to what it allocated; ``gc.unfreeze`` hands them back to the oldest generation afterwards,
    so nothing is leaked, only collected later. Skipped when the host froze objects itself
    (it keeps its own freeze) or disabled the collector; nested/concurrent invocations share
    one freeze (the last one to finish unfreezes).
    """
    global _GC_ACTIVE
    with _GC_LOCK:
        if _GC_ACTIVE == 0 and (not gc.isenabled() or gc.get_freeze_count()):
            owned = False
        else:
            owned = True
            if _GC_ACTIVE == 0:
                gc.freeze()
            _GC_ACTIVE += 1
    try:
        yield
    finally:
        if owned:
            with _GC_LOCK:
                _GC_ACTIVE -= 1
                if _GC_ACTIVE == 0:
                    gc.unfreeze()


def _store_token(token: str) -> dict[str, Any] | None:
    """The store token lambdarun's own orchestrator issues, or None for any other token."""
    try:
        decoded = decode_token(token)
    except Exception:  # noqa: BLE001 - not ours: the durable-execution API's
        return None
    return decoded if isinstance(decoded, dict) and "s" in decoded and "v" in decoded else None


def run_invocation(
    func: Callable[[Any, DurableContext], Any],
    inv: DurableInvocationInput,
    lambda_context: Any,
    plugins: list[DurableInstrumentationPluginFactory] | None = None,
) -> dict[str, Any]:
    """Run one invocation of a durable handler; return the AWS-shaped response dict.

    ``plugins``: instrumentation plugin factories (AWS's ``durable_execution(plugins=...)``),
    already loaded by :func:`~lambdarun_durable.plugin_discovery.load_configured_plugins`;
    a fresh :class:`~lambdarun_durable.instrumentation.PluginExecutor` serves this invocation.
    """
    with _gc_scope():
        return _run_invocation(func, inv, lambda_context, PluginExecutor(plugins))


def _run_invocation(
    func: Callable[[Any, DurableContext], Any],
    inv: DurableInvocationInput,
    lambda_context: Any,
    plugin_executor: PluginExecutor,
) -> dict[str, Any]:
    started = inv.clock()
    arn = inv.durable_execution_arn
    token = _store_token(inv.checkpoint_token) if inv.store is None else decode_token(inv.checkpoint_token)
    if token is None:
        # a token of Lambda's durable-execution API (the local service's or AWS's): checkpoint
        # through CheckpointDurableExecution, page through GetDurableExecutionState
        from lambdarun_durable.api_store import ApiCheckpointStore

        store: Any = ApiCheckpointStore(inv.checkpoint_token)
        token = {"v": 0}
    else:
        store = inv.store if inv.store is not None else _open_store(token["s"])
    if inv.operations is not None:
        operations = {op["Id"]: dict(op) for op in inv.operations}
        version = int(token["v"])
    else:
        cp = store.load(arn)
        operations = fold(cp.records)
        version = cp.version
    state = ExecutionState(
        durable_execution_arn=arn,
        store=store,
        version=version,
        operations=operations,
        invocation_id=token.get("i") or str(uuid.uuid4()),
        clock=inv.clock,
        max_batch_records=inv.batch_records,
        max_batch_age=inv.batch_age,
        batching=inv.batching,
        plugin_executor=plugin_executor,
        updated_operation_ids=inv.updated_operation_ids,
    )
    exec_op = state.execution_operation()
    if exec_op is not None and exec_op["Status"] not in ("STARTED",):
        return _closed_output(exec_op)
    payload = ((exec_op or {}).get("ExecutionDetails") or {}).get("InputPayload")
    input_event: Any = json.loads(payload) if payload else {}
    if inv.extra.get("input_key") and isinstance(input_event, dict):
        input_event = input_event.get(inv.extra["input_key"])  # the durable backend's wrapper
    ctx = DurableContext.from_lambda_context(state, lambda_context, replaying=state.has_prior_operations())
    request_id = getattr(lambda_context, "aws_request_id", None) or state.invocation_id

    def finish(status: str, *, result: str | None = None, error: ErrorObject | None = None) -> None:
        now = state.now_ms()
        records: list[dict[str, Any]] = [
            {
                "E": "InvocationCompleted",
                "T": now,
                "X": {"StartTimestamp": int(started * 1000), "EndTimestamp": now, "RequestId": request_id},
                "S": "i",
                "I": state.invocation_id,
            }
        ]
        st = None
        if status != "PENDING" and exec_op is not None:
            op, extra = transition(
                exec_op,
                op_id=exec_op["Id"],
                op_type="EXECUTION",
                action="SUCCEED" if status == "SUCCEEDED" else "FAIL",
                now=now,
                payload=result,
                error=error,
            )
            rec = make_record(op, extra, now, "i", state.invocation_id)
            # the result lives once, in the EXECUTION operation (history reads it from there)
            rec.pop("X", None)
            records.append(rec)
            st = build_state(arn, exec_op, status, end=now, result=result, error=error.to_dict() if error else None)
        state.flush(records, state=st)

    with plugin_executor.run():
        try:
            if plugin_executor.has_plugins:
                plugin_executor.on_invocation_start(
                    execution_arn=arn,
                    lambda_context=lambda_context,
                    execution_start_time=_execution_start_time(exec_op),
                    is_first_invocation=not state.has_prior_operations(),
                    execution_input=input_event,
                    operations_provider=state.operation_views,
                    updated_operation_ids=inv.updated_operation_ids,
                )
            output = _run_handler(func, state, input_event, ctx, finish)
        except BaseException as error:
            # every started plugin gets its End hook, as in AWS's SDK (a RETRY outcome)
            try:
                plugin_executor.on_invocation_end(
                    DurableExecutionInvocationOutput.create_retry(ErrorObject.from_exception(error))
                )
            except BaseException:  # noqa: BLE001 - the original failure is raised
                log.exception("durable.plugin.invocation_end_failed", arn=arn)
            raise
        plugin_executor.on_invocation_end(DurableExecutionInvocationOutput.from_dict(output))
        return output


def _execution_start_time(exec_op: Mapping[str, Any] | None) -> Any:
    return Operation.from_wire(exec_op).start_timestamp if exec_op is not None else None


def _run_handler(
    func: Callable[[Any, DurableContext], Any],
    state: ExecutionState,
    input_event: Any,
    ctx: DurableContext,
    finish: Callable[..., None],
) -> dict[str, Any]:
    stop_flusher = state.start_flusher()
    try:
        try:
            result = func(input_event, ctx)
        except SuspendExecution:
            finish("PENDING")
            return DurableExecutionInvocationOutput.create_pending().to_dict()
        except InvocationError as e:
            if e.is_retryable():
                state.flush()  # what was checkpointed stays; the invocation is retried
                raise
            err = ErrorObject.from_exception(e)
            finish("FAILED", error=err)
            return DurableExecutionInvocationOutput(InvocationStatus.FAILED, error=err).to_dict()
        except ExecutionError as e:
            err = ErrorObject.from_exception(e)
            finish("FAILED", error=err)
            return DurableExecutionInvocationOutput(InvocationStatus.FAILED, error=err).to_dict()
        except StoreCheckpointError:
            raise  # the store refused a write (another writer first): the invocation fails, the execution does not
        except Exception as e:  # noqa: BLE001 - user errors fail the execution
            err = ErrorObject(
                message=str(e),
                type=ErrorObject.from_exception(e).type,
                data=getattr(e, "data", None),
                stack_trace=traceback.format_exception(e)[-20:],
            )
            finish("FAILED", error=err)
            return DurableExecutionInvocationOutput(InvocationStatus.FAILED, error=err).to_dict()
        serialized = json.dumps(result)
        finish("SUCCEEDED", result=serialized)
        if len(serialized) > LAMBDA_RESPONSE_SIZE_LIMIT:
            return DurableExecutionInvocationOutput.create_succeeded("").to_dict()
        return DurableExecutionInvocationOutput.create_succeeded(serialized).to_dict()
    except ExecutionClosed:
        return _closed_output(state.execution_operation() or {})
    finally:
        stop_flusher()


def _closed_output(exec_op: Mapping[str, Any]) -> dict[str, Any]:
    status = exec_op.get("Status")
    details = exec_op.get("ExecutionDetails") or {}
    if status == "SUCCEEDED":
        return {"Status": "SUCCEEDED", "Result": details.get("Result", "")}
    err = details.get("Error") or {"ErrorMessage": f"execution is {status}", "ErrorType": "ExecutionStopped"}
    return {"Status": "FAILED", "Error": err}


def durable_execution(
    func: Callable[[Any, DurableContext], Any] | None = None,
    *,
    boto3_client: Any = None,  # accepted for AWS SDK compatibility; unused
    plugins: list[DurableInstrumentationPluginFactory] | None = None,
) -> Any:
    """Decorate ``handler(event, context: DurableContext)`` into a Lambda handler.

    ``plugins``: AWS's instrumentation plugin factories; each factory's ``create_plugin`` is
    called once per invocation. Factories named by ``DURABLE_EXECUTION_PLUGINS`` (entry-point
    group ``aws_durable_execution.plugins``) are loaded too, as in AWS's SDK.
    """
    if func is None:
        return functools.partial(durable_execution, boto3_client=boto3_client, plugins=plugins)
    configured_plugins = load_configured_plugins(plugins)

    @functools.wraps(func)
    def wrapper(event: Any, context: Any) -> MutableMapping[str, Any]:
        inv = event if isinstance(event, DurableInvocationInput) else DurableInvocationInput.from_event(event)
        return run_invocation(func, inv, context, configured_plugins)

    wrapper.__lambdarun_durable__ = func  # type: ignore[attr-defined]
    return wrapper


def is_durable_handler(obj: Any) -> bool:
    return hasattr(obj, "__lambdarun_durable__")
