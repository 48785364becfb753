"""The data plane: the Invoke operation (``RequestResponse``, ``Event``, ``DryRun``), its
payload limits, ClientContext and ``LogType=Tail``."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from lambdarun.local.async_queue import AsyncQueue
from lambdarun.local.model import AsyncEvent, Invocation, Registry
from lambdarun.local.options import ASYNC_REQUEST_LIMIT, LOG_TAIL_BYTES, STOP_MARKER_KEY, SYNC_REQUEST_LIMIT
from lambdarun.local.records import RecordBook
from lambdarun.local.scheduler import Scheduler
from lambdarun.local.shapes import ApiError, Reply


class Invoker:
    """Runs Invoke requests: synchronous ones on the scheduler, Events through the queue."""

    def __init__(self, registry: Registry, scheduler: Scheduler, async_queue: AsyncQueue,
                 records: RecordBook) -> None:
        self.registry = registry
        self.scheduler = scheduler
        self.async_queue = async_queue
        self.records = records
        #: the service's extensions (lambdarun_lambda_service_extensions): offered every
        #: Invoke of a durable function first
        self.extensions: list[Any] = []

    def invoke(self, name: str, qualifier: str | None, headers: Any, body: bytes) -> Reply:
        fn = self.registry.route(name, qualifier)  # an alias's weights pick the version
        if fn.durable_config is not None:
            return self._durable(fn.configuration(), qualifier, headers, body)
        invocation_type = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        limit = ASYNC_REQUEST_LIMIT if invocation_type == "Event" else SYNC_REQUEST_LIMIT
        if len(body) > limit:
            raise ApiError(
                413, "RequestEntityTooLargeException",
                f"Request must be smaller than {limit} bytes for the "
                f"{'InvokeAsync' if invocation_type == 'Event' else 'InvokeFunction'} operation",
            )
        payload = body or b"{}"
        try:
            json.loads(payload)
        except ValueError as e:
            raise ApiError(400, "InvalidRequestContentException",
                           f"Could not parse request body into json: {e}") from e
        client_context = None
        marker = None
        raw_cc = headers.get("X-Amz-Client-Context")
        if raw_cc:
            try:
                client_context = base64.b64decode(raw_cc).decode("utf-8")
                doc = json.loads(client_context)
            except (binascii.Error, ValueError) as e:
                raise ApiError(400, "InvalidRequestContentException",
                               f"Client context must be base64-encoded JSON: {e}") from e
            custom = doc.get("custom") if isinstance(doc, dict) else None
            if isinstance(custom, dict) and custom.get(STOP_MARKER_KEY) is not None:
                marker = str(custom[STOP_MARKER_KEY])
        if invocation_type == "DryRun":
            return 204, b"", {"X-Amz-Executed-Version": fn.version, "x-amzn-RequestId": str(uuid.uuid4())}
        if invocation_type == "Event":
            request_id = self.async_queue.enqueue(fn, AsyncEvent(payload, client_context, marker=marker))
            return 202, b"", {"x-amzn-RequestId": request_id}
        if invocation_type != "RequestResponse":
            raise ApiError(400, "InvalidParameterValueException",
                           f"Unsupported invocation type {invocation_type!r}.")
        inv = Invocation(payload, client_context, fn.timeout, marker)
        inv.invoked_arn = f"{fn.arn}:{qualifier}" if qualifier else fn.arn  # context.invoked_function_arn
        rec = inv.record = self.records.new(inv.request_id, fn.name, "RequestResponse", "running")
        rec.attempts = 1
        try:
            env, _cold = self.scheduler.run(fn, inv, wait=False)
        except ApiError as e:
            rec.status = "throttled" if e.status == 429 else "failed"
            rec.error_type, rec.error_message = e.code, e.message
            raise
        out = {"X-Amz-Executed-Version": fn.version, "x-amzn-RequestId": inv.request_id}
        if inv.function_error:
            out["X-Amz-Function-Error"] = inv.function_error
        if env is not None and (headers.get("X-Amz-Log-Type") or "").lower() == "tail":
            tail = env.log_since(inv.log_start)[-LOG_TAIL_BYTES:]
            out["X-Amz-Log-Result"] = base64.b64encode(tail).decode()
        return 200, inv.result, out

    def _durable(self, config: dict[str, Any], qualifier: str | None, headers: Any, body: bytes) -> Reply:
        """A durable function's Invoke starts an execution: the extension that serves them
        answers it (the lambdarun-durable plugin's durable-execution API)."""
        for ext in self.extensions:
            reply = ext.on_invoke(config, qualifier, headers, body)
            if reply is not None:
                return reply
        raise ApiError(500, "ServiceException",
                       f"Function {config['FunctionName']} is durable (DurableConfig) but no installed "
                       "plugin serves durable executions: install lambdarun-durable.")
