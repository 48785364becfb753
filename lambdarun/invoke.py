"""The default invoker plugin: boto3 ``lambda.invoke`` on the session's target."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.errors import (
    FunctionNotFoundError,
    InvocationError,
    InvocationOutcomeUnknownError,
    PayloadTooLargeError,
    ThrottledError,
)
from lambdarun.hookspecs import hookimpl
from lambdarun.limits import ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT  # re-exported
from lambdarun.types import InvocationType, InvokeHandle, InvokeResponse

if TYPE_CHECKING:
    from lambdarun.session import Session
    from lambdarun.types import Target

__all__ = ["Boto3Invoker", "SYNC_PAYLOAD_LIMIT", "ASYNC_PAYLOAD_LIMIT"]

log = structlog.get_logger(__name__)



class Boto3Invoker:
    """Invokes through ``target.client("lambda")``; ``invoke_async`` runs sync invokes in a pool."""

    def __init__(self, target: Target, *, max_workers: int | None = None) -> None:
        self.target = target
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers or min(64, (os.cpu_count() or 2) * 8),
            thread_name_prefix="lambdarun-invoke",
        )

    def invoke(
        self,
        function_name: str,
        payload: bytes,
        *,
        invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE,
        log_tail: bool = False,
        client_context: Mapping[str, Any] | None = None,
    ) -> InvokeResponse:
        invocation_type = InvocationType(invocation_type)
        limit = ASYNC_PAYLOAD_LIMIT if invocation_type is InvocationType.EVENT else SYNC_PAYLOAD_LIMIT
        if len(payload) > limit:
            raise PayloadTooLargeError(
                f"request of {len(payload)} bytes is over Lambda's {limit}-byte limit for "
                f"{invocation_type.value} invocations; pass large data through storage"
            )
        client = self.target.client("lambda")
        kwargs: dict[str, Any] = {
            "FunctionName": function_name,
            "InvocationType": invocation_type.value,
            "Payload": payload,
        }
        if log_tail:
            kwargs["LogType"] = "Tail"
        if client_context:
            kwargs["ClientContext"] = base64.b64encode(json.dumps(client_context).encode()).decode()
        try:
            response = client.invoke(**kwargs)
        except client.exceptions.ResourceNotFoundException as exc:
            raise FunctionNotFoundError(
                f"Lambda function {function_name!r} not found on target {self.target.name!r}: "
                f"{exc}. Deploy it with `lambdarun deploy --function {function_name}`."
            ) from exc
        except client.exceptions.RequestTooLargeException as exc:
            raise PayloadTooLargeError(str(exc)) from exc
        except client.exceptions.TooManyRequestsException as exc:
            raise ThrottledError(
                f"Lambda function {function_name!r} is at its concurrency limit: {exc}. Lower "
                "max_workers or raise the function's reserved concurrency."
            ) from exc
        except Exception as exc:
            if _is_payload_too_large(exc):
                raise PayloadTooLargeError(str(exc)) from exc
            if isinstance(exc, InvocationError):
                raise
            if _sent_then_lost(exc):
                raise InvocationOutcomeUnknownError(
                    f"the connection to {self.target.name!r} was lost after the Invoke of "
                    f"{function_name!r} was sent ({type(exc).__name__}: {exc}); the function may "
                    "have run. It is not re-sent blindly: re-deliver the same call attempt (its "
                    "claim returns the first delivery's outcome) or make a new attempt"
                ) from exc
            raise InvocationError(
                f"invoking {function_name!r} on target {self.target.name!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        body = response.get("Payload")
        data = body.read() if body is not None else b""
        tail = response.get("LogResult")
        return InvokeResponse(
            status_code=response.get("StatusCode", 0),
            payload=data,
            function_error=response.get("FunctionError"),
            log_tail=base64.b64decode(tail).decode("utf-8", "replace") if tail else None,
            executed_version=response.get("ExecutedVersion"),
            request_id=response.get("ResponseMetadata", {}).get("RequestId"),
        )

    def invoke_async(self, function_name: str, payload: bytes, **kwargs: Any) -> InvokeHandle:
        future = self._pool.submit(self.invoke, function_name, payload, **kwargs)
        return InvokeHandle(
            function_name=function_name,
            invocation_type=InvocationType(kwargs.get("invocation_type", InvocationType.REQUEST_RESPONSE)),
            future=future,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _sent_then_lost(exc: Exception) -> bool:
    """A connection error after the request was (or may have been) sent."""
    from botocore.exceptions import ConnectionClosedError, HTTPClientError, ReadTimeoutError

    from lambdarun.targets import _NOT_SENT

    if {cls.__name__ for cls in type(exc).__mro__} & set(_NOT_SENT):
        return False
    return isinstance(exc, (ConnectionClosedError, ReadTimeoutError, HTTPClientError))


def _is_payload_too_large(exc: Exception) -> bool:
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
    return code in ("RequestEntityTooLargeException", "RequestTooLargeException")


@hookimpl(trylast=True)
def lambdarun_make_invoker(target: Target, session: Session) -> Boto3Invoker:
    # never more threads than the target runs at once: extra ones only collect 429s
    workers = session.settings.max_workers or getattr(target, "concurrency_limit", None)
    return Boto3Invoker(target, max_workers=workers)
