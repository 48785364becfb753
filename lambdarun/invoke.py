"""The default invoker plugin: Lambda's ``Invoke`` on the session's target, through
:mod:`lambdarun.lambda_http` (the same request boto3 sends, at a fraction of its CPU).

``invoke`` waits for the answer; ``invoke_async`` returns at once with a future that the
invoker's event-loop thread completes (no thread per invocation in flight). The caller
bounds how many it keeps in flight (covalent's ``map`` keeps the target's concurrency)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.errors import (
    FunctionNotFoundError,
    InvocationError,
    PayloadTooLargeError,
    ThrottledError,
)
from lambdarun.hookspecs import hookimpl
from lambdarun.lambda_http import LambdaHttp, LambdaHttpResponse, LambdaServiceError
from lambdarun.limits import ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT  # re-exported
from lambdarun.targets import LAMBDA_READ_TIMEOUT
from lambdarun.types import InvocationType, InvokeHandle, InvokeResponse

if TYPE_CHECKING:
    from lambdarun.session import Session
    from lambdarun.types import Target

__all__ = ["LambdaInvoker", "SYNC_PAYLOAD_LIMIT", "ASYNC_PAYLOAD_LIMIT"]

log = structlog.get_logger(__name__)



class LambdaInvoker:
    """Invokes the target's Lambda API through :class:`lambdarun.lambda_http.LambdaHttp`
    (botocore's SigV4 signer and credentials, keep-alive connections on one event-loop
    thread, botocore's standard retry rules for what cannot have run)."""

    def __init__(self, target: Target, *, max_attempts: int = 5) -> None:
        self.target = target
        self._http = LambdaHttp(target, max_attempts=max_attempts, read_timeout=LAMBDA_READ_TIMEOUT)

    def invoke(
        self,
        function_name: str,
        payload: bytes,
        *,
        invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE,
        log_tail: bool = False,
        client_context: Mapping[str, Any] | None = None,
    ) -> InvokeResponse:
        headers = self._headers(payload, InvocationType(invocation_type), log_tail, client_context)
        try:
            response = self._http.invoke(function_name, payload, headers)
        except LambdaServiceError as exc:
            raise self._typed(function_name, exc) from exc
        return self._response(response)

    def invoke_async(
        self,
        function_name: str,
        payload: bytes,
        *,
        invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE,
        log_tail: bool = False,
        client_context: Mapping[str, Any] | None = None,
    ) -> InvokeHandle:
        """Send the Invoke now; the handle's ``future`` resolves to the
        :class:`~lambdarun.types.InvokeResponse` (or fails with the error ``invoke`` raises).
        Its done callbacks run on the invoker's event-loop thread: they must not block."""
        invocation_type = InvocationType(invocation_type)
        try:
            headers = self._headers(payload, invocation_type, log_tail, client_context)
        except PayloadTooLargeError as exc:
            future: concurrent.futures.Future[InvokeResponse] = concurrent.futures.Future()
            future.set_exception(exc)
        else:
            future = self._http.submit(
                function_name, payload, headers, finish=self._response,
                failed=lambda exc: self._typed(function_name, exc) if isinstance(exc, LambdaServiceError) else exc)
        return InvokeHandle(function_name=function_name, invocation_type=invocation_type, future=future)

    @staticmethod
    def _headers(payload: bytes, invocation_type: InvocationType, log_tail: bool,
                 client_context: Mapping[str, Any] | None) -> dict[str, str]:
        limit = ASYNC_PAYLOAD_LIMIT if invocation_type is InvocationType.EVENT else SYNC_PAYLOAD_LIMIT
        if len(payload) > limit:
            raise PayloadTooLargeError(
                f"request of {len(payload)} bytes is over Lambda's {limit}-byte limit for "
                f"{invocation_type.value} invocations; pass large data through storage"
            )
        headers = {"X-Amz-Invocation-Type": invocation_type.value}
        if log_tail:
            headers["X-Amz-Log-Type"] = "Tail"
        if client_context:
            headers["X-Amz-Client-Context"] = base64.b64encode(json.dumps(client_context).encode()).decode()
        return headers

    @staticmethod
    def _response(response: LambdaHttpResponse) -> InvokeResponse:
        get = response.headers.get
        tail = get("X-Amz-Log-Result")
        try:
            log_text = base64.b64decode(tail, validate=True).decode("utf-8", "replace") if tail else None
        except ValueError:
            log_text = None  # a malformed log tail is not the call's outcome
        return InvokeResponse(
            status_code=response.status,
            payload=response.payload,
            function_error=get("X-Amz-Function-Error"),
            log_tail=log_text,
            executed_version=get("X-Amz-Executed-Version"),
            request_id=get("x-amzn-RequestId"),
        )

    def _typed(self, function_name: str, exc: LambdaServiceError) -> InvocationError:
        """Lambda's error code as lambdarun's typed error."""
        if exc.code == "ResourceNotFoundException":
            return FunctionNotFoundError(
                f"Lambda function {function_name!r} not found on target {self.target.name!r}: "
                f"{exc}. Deploy it with `lambdarun deploy --function {function_name}`."
            )
        if exc.code in ("RequestTooLargeException", "RequestEntityTooLargeException") or exc.status == 413:
            return PayloadTooLargeError(str(exc))
        if exc.code == "TooManyRequestsException" or exc.status == 429:
            return ThrottledError(
                f"Lambda function {function_name!r} is at its concurrency limit: {exc}. Lower "
                "max_workers or raise the function's reserved concurrency."
            )
        return InvocationError(
            f"invoking {function_name!r} on target {self.target.name!r} failed: ClientError: {exc}"
        )

    def before_sign(self, callback: Any) -> Any:
        """``callback(headers)`` before each Invoke is signed; returns the undo
        (:meth:`lambdarun.lambda_http.LambdaHttp.before_sign`)."""
        return self._http.before_sign(callback)

    def close(self) -> None:
        self._http.close()


@hookimpl(trylast=True)
def lambdarun_make_invoker(target: Target, session: Session) -> LambdaInvoker:
    return LambdaInvoker(target, max_attempts=session.settings.section("aws").max_attempts)
