"""The control plane of the local durable-execution API: ``GetDurableExecution``,
``GetDurableExecutionHistory``, ``ListDurableExecutionsByFunction``, ``Stop``/``Pause``/
``Resume``/``DeleteDurableExecution`` and ``SendDurableExecutionCallbackSuccess``/
``Failure``/``Heartbeat``: the half of :class:`~lambdarun_durable.local_api.api.DurableApi`
that acts on executions from outside (DurableApi holds the store, the engine, the
per-execution locks and the runner these operations use).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lambdarun.errors import ExecutionNotFoundError

from lambdarun_durable.history import history_events
from lambdarun_durable.lambda_service import TERMINAL_STATUSES, ErrorObject
from lambdarun_durable.local_api import shapes
from lambdarun_durable.local_api.shapes import ApiFailure, Reply, invalid, ok
from lambdarun_durable.records import fold, parse_arn

if TYPE_CHECKING:
    from lambdarun_durable.local_api.runner import Runner
    from lambdarun_durable.service import DurableService
    from lambdarun_durable.stores.sqlite import SQLiteCheckpointStore

#: how long a Pause/ResumeDurableExecution ClientToken is remembered (AWS: 15 minutes)
CLIENT_TOKEN_WINDOW = 900.0


class ControlPlane:
    """The control-plane operations, mixed into
    :class:`~lambdarun_durable.local_api.api.DurableApi` (whose ``load``, ``exec_lock`` and
    ``exec_op`` they call)."""

    host: Any
    store: SQLiteCheckpointStore
    service: DurableService
    runner: Runner
    _lock: threading.RLock
    _client_tokens: dict[tuple[str, str], tuple[str, dict[str, Any], float]]

    if TYPE_CHECKING:
        def load(self, arn: str) -> Any: ...

        def exec_lock(self, arn: str) -> threading.Lock: ...

        def exec_op(self, cp: Any) -> dict[str, Any]: ...

    def describe(self, arn: str, include_data: bool = True) -> dict[str, Any]:
        cp = self.load(arn)
        st = cp.state
        exec_op = self.exec_op(cp)
        qualifier = exec_op.get("_Qualifier") or "$LATEST"
        fn = st.get("FunctionName") or parse_arn(arn)["FunctionName"]
        out: dict[str, Any] = {
            "DurableExecutionArn": arn,
            "DurableExecutionName": st.get("DurableExecutionName"),
            "FunctionArn": f"arn:aws:lambda:{self.host.region}:{self.host.account}:function:{fn}:{qualifier}",
            "Status": self._status(arn, st),
            "StartTimestamp": shapes.seconds(st.get("StartTimestamp")),
            "Version": qualifier,
        }
        if st.get("EndTimestamp") is not None:
            out["EndTimestamp"] = shapes.seconds(st["EndTimestamp"])
        if exec_op.get("_TimeoutAt"):
            out["ExpectedExecutionTimeoutTimestamp"] = shapes.seconds(exec_op["_TimeoutAt"])
        out["ExecutionDataIncluded"] = include_data
        if include_data:
            payload = (exec_op.get("ExecutionDetails") or {}).get("InputPayload")
            if payload is not None:
                out["InputPayload"] = payload
            if st.get("Status") == "SUCCEEDED":
                result = self.service.describe(arn).get("Result")
                if result is not None:
                    out["Result"] = result
        if st.get("Error") is not None:
            out["Error"] = st["Error"]
        return out

    def _status(self, arn: str, st: Mapping[str, Any]) -> Any:
        """A paused running execution is PAUSING while its invocation still runs (AWS lets it
        reach its next checkpoint), then PAUSED."""
        if st.get("Status") != "RUNNING" or not self.runner.is_paused(arn):
            return st.get("Status")
        return "PAUSING" if self.runner.is_running(arn) else "PAUSED"

    def get_execution(self, arn: str, query: Mapping[str, str], _body: bytes) -> Reply:
        return ok(self.describe(arn, shapes.bool_param(query, "IncludeExecutionData", True)))

    def get_history(self, arn: str, query: Mapping[str, str], _body: bytes) -> Reply:
        cp = self.load(arn)
        events = history_events(cp.records, include_execution_data=shapes.bool_param(query, "IncludeExecutionData"))
        if shapes.bool_param(query, "ReverseOrder"):
            events.reverse()
        page, next_marker = shapes.page(events, query.get("Marker"), shapes.int_param(query, "MaxItems", 100))
        out: dict[str, Any] = {"Events": page}
        if next_marker is not None:
            out["NextMarker"] = next_marker
        return ok(out)

    def list_by_function(self, function: str, query: Mapping[str, str]) -> Reply:
        name = function.split(":function:", 1)[-1].split(":", 1)[0]
        if self.host.function_config(name) is None:
            raise ApiFailure(404, "ResourceNotFoundException",
                             f"Function not found: arn:aws:lambda:{self.host.region}:{self.host.account}:function:{name}")
        statuses = set(query.get("Statuses", "").split(",")) - {""} if query.get("Statuses") else set()
        if statuses - shapes.STATUSES - {"PAUSED", "PAUSING"}:
            raise invalid(f"Statuses must be among {sorted(shapes.STATUSES)}.")
        wanted_name = query.get("DurableExecutionName")
        after, before = shapes.time_param(query, "StartedAfter"), shapes.time_param(query, "StartedBefore")
        items = []
        for cp in self.store.list(limit=1_000_000):
            st = cp.state
            if st.get("FunctionName") != name:
                continue
            desc = {k: v for k, v in self.describe(cp.execution_id, False).items()
                    if k in ("DurableExecutionArn", "DurableExecutionName", "FunctionArn", "Status",
                             "StartTimestamp", "EndTimestamp")}
            if statuses and desc["Status"] not in statuses:
                continue
            if wanted_name and desc["DurableExecutionName"] != wanted_name:
                continue
            started = desc["StartTimestamp"] or 0
            if (after is not None and started < after) or (before is not None and started > before):
                continue
            items.append(desc)
        items.sort(key=lambda d: d["StartTimestamp"] or 0, reverse=shapes.bool_param(query, "ReverseOrder"))
        page, next_marker = shapes.page(items, query.get("Marker"), shapes.int_param(query, "MaxItems", 50))
        out: dict[str, Any] = {"DurableExecutions": page}
        if next_marker is not None:
            out["NextMarker"] = next_marker
        return ok(out)

    def stop(self, arn: str, _query: Mapping[str, str], body: bytes) -> Reply:
        error = shapes.error_object(shapes.body_json(body)) if body else None  # the body is the ErrorObject
        self.load(arn)
        with self.exec_lock(arn):
            if self.store.load_state(arn).state.get("Status") in TERMINAL_STATUSES:
                raise ApiFailure(409, "ResourceConflictException", f"Durable execution {arn} has already ended.")
            self.service.stop_execution(arn, error or None)
            self.live.pop(arn, None)  # the running invocation's next checkpoint is refused
        self.runner.wake(arn)
        return ok({"StopTimestamp": self.service.clock()})

    def _replayed(self, operation: str, arn: str, req: Mapping[str, Any]) -> bool:
        """AWS's ClientToken: a request repeated with the same token and parameters within 15
        minutes has no second effect and succeeds; the same token with other parameters is
        refused (nothing changes)."""
        token = req.get("ClientToken")
        if token is None:
            return False
        now = time.monotonic()
        key = (operation, token)
        params = {k: v for k, v in req.items() if k != "ClientToken"}
        with self._lock:
            for k in [k for k, (_, _, at) in self._client_tokens.items() if now - at > CLIENT_TOKEN_WINDOW]:
                del self._client_tokens[k]
            seen = self._client_tokens.get(key)
            if seen is None:
                return False
        if seen[0] != arn or seen[1] != params:
            raise invalid(f"ClientToken {token} was used with different parameters in the last 15 minutes: "
                          "use a new ClientToken, or resend the earlier request unchanged.")
        return True

    def _remember(self, operation: str, arn: str, req: Mapping[str, Any]) -> None:
        if req.get("ClientToken") is not None:
            with self._lock:
                self._client_tokens[(operation, req["ClientToken"])] = (
                    arn, {k: v for k, v in req.items() if k != "ClientToken"}, time.monotonic())

    def pause(self, arn: str, _query: Mapping[str, str], body: bytes) -> Reply:
        req = shapes.pause_request(body, pause=True)
        if self._replayed("pause", arn, req):
            return 202, b"{}", {}
        with self.exec_lock(arn):
            if self.load(arn).state.get("Status") in TERMINAL_STATUSES:
                raise ApiFailure(409, "ResourceConflictException", f"Durable execution {arn} has already ended.")
            # persisted (a restarted service keeps it paused); pausing a paused one changes nothing
            self.service.record_pause(arn, True, reason=req["Reason"], timeout_paused=req["ExecutionTimeoutPaused"])
            self.runner.pause(arn, True)
        self._remember("pause", arn, req)
        return 202, b"{}", {}

    def resume(self, arn: str, _query: Mapping[str, str], body: bytes) -> Reply:
        req = shapes.pause_request(body, pause=False)
        if self._replayed("resume", arn, req):
            return 202, b"{}", {}
        with self.exec_lock(arn):
            self.load(arn)
            if not self.runner.is_paused(arn):
                raise ApiFailure(409, "ResourceConflictException", f"Durable execution {arn} is not paused.")
            self.service.record_pause(arn, False, reason=req["Reason"])
            self.runner.pause(arn, False)
        self._remember("resume", arn, req)
        self.runner.retime(arn)  # the execution timeout moved by the time spent paused
        return 202, b"{}", {}

    def delete(self, arn: str, _query: Mapping[str, str], _body: bytes) -> Reply:
        st = self.load(arn).state
        if st.get("Status") not in TERMINAL_STATUSES:
            raise ApiFailure(409, "ResourceConflictException",
                             f"Durable execution {arn} is {st.get('Status')}: stop it before deleting it.")
        self.store.delete(arn)
        self.runner.forget(arn)
        return ok({"DeletionRequestTimestamp": self.service.clock()}, status=202)

    def callback(self, callback_id: str, action: str, body: bytes) -> Reply:
        from lambdarun_durable.records import decode_callback_id

        try:
            arn, op_id = decode_callback_id(callback_id)
        except ExecutionNotFoundError:
            raise ApiFailure(404, "ResourceNotFoundException", f"Callback not found: {callback_id}") from None
        if action == "SUCCEED":
            payload = body.decode("utf-8", "replace") if body else None
            kwargs: dict[str, Any] = {"payload": payload}
        elif action == "FAIL":
            error = shapes.error_object(shapes.body_json(body))
            kwargs = {"error": ErrorObject.from_dict(error or {"ErrorMessage": "Callback failed"})}
        else:
            kwargs = {}
        with self.exec_lock(arn):
            try:
                cp = self.store.load(arn)
            except ExecutionNotFoundError:
                raise ApiFailure(404, "ResourceNotFoundException", f"Callback not found: {callback_id}") from None
            op = fold(cp.records).get(op_id)
            if op is None or op["Type"] != "CALLBACK":
                raise ApiFailure(404, "ResourceNotFoundException", f"Callback not found: {callback_id}")
            if op["Status"] == "TIMED_OUT":
                raise ApiFailure(400, "CallbackTimeoutException", f"Callback {callback_id} has timed out.")
            if op["Status"] != "STARTED":
                raise invalid(f"Callback {callback_id} is already {op['Status']}: a callback completes once.")
            if action == "HEARTBEAT":
                self.service.send_callback_heartbeat(callback_id)
            elif action == "SUCCEED":
                self.service.send_callback_success(callback_id, kwargs["payload"])
            else:
                self.service.send_callback_failure(callback_id, kwargs["error"])
        if action == "HEARTBEAT":
            self.runner.retime(arn)  # a new heartbeat deadline, never an invocation
        else:
            self.runner.wake(arn)
        return ok({})
