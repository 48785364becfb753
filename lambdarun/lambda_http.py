"""Lambda's ``Invoke`` from one event-loop thread: the hot path of every invocation.

boto3's ``lambda.invoke`` costs ~0.45 ms of CPU per call in one thread and ~1.3 ms per call
from a 1,000-thread pool (its event system, parameter validation, model-driven parsing,
and locks that the threads contend for). This client sends the same request with the same
well-kept parts, and nothing else per call:

* the request is signed by botocore's own SigV4 signer (:class:`botocore.auth.SigV4Auth`)
  with the target's botocore credentials (``get_frozen_credentials()`` per request, so
  refreshable credentials refresh as botocore refreshes them), in the calling thread;
* it goes over :mod:`lambdarun.http_loop`: h11 on one asyncio loop thread, keep-alive
  connections with ``TCP_NODELAY``, botocore's CA bundle and the environment's proxies as
  botocore resolves them (``CONNECT`` tunnels for HTTPS), as many idle connections kept as
  were in flight (up to :data:`MAX_IDLE_CONNECTIONS`). :meth:`LambdaHttp.invoke` waits for
  the answer; :meth:`LambdaHttp.submit` returns a future at once, so a thousand invocations
  in flight need no thread each;
* errors are Lambda's (``x-amzn-ErrorType`` header, else the JSON body's ``__type`` /
  ``code``) and retried by botocore's *standard* mode rules: throttles (HTTP 429
  ``TooManyRequestsException``) and connections that could not be opened are re-sent after
  ``rand(0, 1) * min(scale * 2 ** (attempt - 1), 20)`` seconds (scale 1 s for throttles,
  50 ms otherwise), at most ``[aws] max_attempts`` times, with botocore's retry quota;
  nothing that may have reached the function is re-sent (a connection lost after the
  request was sent, a read time-out, an HTTP 5xx: see :mod:`lambdarun.targets`).

The response is read up to Lambda's synchronous response limit (plus headroom for its
error envelope); a longer or malformed answer is :class:`~lambdarun.errors.InvocationOutcomeUnknownError`
(the request was delivered: the function may have run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import structlog

from lambdarun.errors import InvocationError, InvocationOutcomeUnknownError
from lambdarun.http_loop import AnswerLost, AnswerTooLarge, ConnectFailed, Connections, LoopThread, Route
from lambdarun.limits import SYNC_RESPONSE_LIMIT

if TYPE_CHECKING:
    from lambdarun.types import Target

__all__ = ["LambdaHttp", "LambdaHttpResponse", "LambdaServiceError", "MAX_IDLE_CONNECTIONS"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: idle keep-alive connections kept per endpoint (as many as were in flight, up to this)
MAX_IDLE_CONNECTIONS = 1024
#: bytes of a response read at most: Lambda's sync response limit plus its error envelope
MAX_RESPONSE_BYTES = SYNC_RESPONSE_LIMIT + 64 * 1024
#: botocore standard mode: retry quota costs and backoff scales
_RETRY_COST = 5
_TIMEOUT_RETRY_COST = 10
_THROTTLING_SCALE = 1.0
_OTHER_SCALE = 0.05
_MAX_BACKOFF = 20.0
_THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
})


class LambdaServiceError(InvocationError):
    """Lambda answered with an error (its HTTP status and ``code``); the invoker maps the
    codes it knows to the typed errors of :mod:`lambdarun.errors`."""

    def __init__(self, status: int, code: str, message: str, *, reason: str | None = None) -> None:
        self.status, self.code, self.message, self.reason = status, code, message, reason
        # the text botocore's ClientError has, so messages read the same as before
        super().__init__(f"An error occurred ({code}) when calling the Invoke operation: {message}")


class LambdaHttpResponse:
    __slots__ = ("status", "headers", "payload")

    def __init__(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
        self.status, self.headers, self.payload = status, headers, payload


class _Request:
    """One Invoke ready to send: where, and its signed headers."""

    __slots__ = ("route", "target", "headers")

    def __init__(self, route: Route, target: str, headers: dict[str, str]) -> None:
        self.route, self.target, self.headers = route, target, headers


class LambdaHttp:
    """Sends ``Invoke`` requests for one target (see the module's docstring).

    :param target: gives the endpoint (``endpoint_url("lambda")``, else the boto3 client's
        resolved regional endpoint), the region and the credentials (``credentials()``), and
        may steer a failed connection (``lambda_connection_failed``, the local target's
        restart following).
    :param max_attempts: retries after the first request (``[aws] max_attempts``, botocore's
        ``retries={"max_attempts": ...}``).
    """

    def __init__(self, target: Target, *, max_attempts: int, read_timeout: float, connect_timeout: float = 10) -> None:
        from botocore.retries.quota import RetryQuota

        self.target = target
        self.max_attempts = max_attempts
        self._quota = RetryQuota()
        self._thread = LoopThread(f"lambdarun-invoke-{target.name}")
        self._connections = Connections(
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_idle=MAX_IDLE_CONNECTIONS,
            response_limit=MAX_RESPONSE_BYTES, ca_certs=self._ca_certs)
        self._lock = threading.Lock()
        self._routes: dict[str, tuple[Route, str]] = {}  # endpoint -> (route, path prefix)
        self._default_endpoint: str | None = None
        self._signer_cache: tuple[Any, Any] | None = None  # (frozen credentials, SigV4Auth)
        self._before_sign: tuple[Callable[[dict[str, str]], None], ...] = ()

    def before_sign(self, callback: Callable[[dict[str, str]], None]) -> Callable[[], None]:
        """Call ``callback(headers)`` on every request's headers before it is signed (as
        botocore's ``before-sign`` event: e.g. the ``Host`` a transparent proxy forwards to);
        returns the undo."""
        with self._lock:
            self._before_sign = (*self._before_sign, callback)

        def undo() -> None:
            with self._lock:
                self._before_sign = tuple(c for c in self._before_sign if c is not callback)

        return undo

    @property
    def connections_opened(self) -> int:
        """TCP connections opened so far (keep-alive means few)."""
        return self._connections.opened

    # -- what to send, where ------------------------------------------------------------------

    def _endpoint(self) -> str:
        url = self.target.endpoint_url("lambda")
        if url:
            return url.rstrip("/")
        if self._default_endpoint is None:  # the region's endpoint, as boto3 resolves it
            self._default_endpoint = self.target.client("lambda").meta.endpoint_url.rstrip("/")
        return self._default_endpoint

    def _signer(self) -> Any:
        from botocore.auth import SigV4Auth

        source = getattr(self.target, "credentials", None)
        if source is None:  # a target that is not a Boto3Target: botocore's default chain
            import botocore.session

            source = botocore.session.get_session().get_credentials
        credentials = source()
        if credentials is None:
            raise InvocationError(
                f"no AWS credentials for target {self.target.name!r}: configure a profile, "
                "[aws] credentials_file, or the AWS_* environment variables")
        frozen = credentials.get_frozen_credentials()
        cached = self._signer_cache
        if cached is not None and cached[0] == frozen:
            return cached[1]
        signer = SigV4Auth(frozen, "lambda", self.target.region)
        self._signer_cache = (frozen, signer)
        return signer

    def _ca_certs(self) -> str | None:
        """The CA bundle botocore verifies HTTPS with: ``[aws]`` config / ``AWS_CA_BUNDLE``,
        else certifi's."""
        from botocore.httpsession import get_cert_path

        bundle = getattr(self.target, "ca_bundle", None)
        path = get_cert_path((bundle() if bundle is not None else None) or True)
        return path if isinstance(path, str) else None

    def _route(self, base: str) -> tuple[Route, str]:
        """The route to ``base`` (its proxy, as botocore picks it: ``HTTP(S)_PROXY`` unless
        ``NO_PROXY`` exempts the host) and the endpoint's path prefix."""
        known = self._routes.get(base)
        if known is not None:
            return known
        from botocore.httpsession import ProxyConfiguration
        from botocore.utils import get_environ_proxies

        parts = urlsplit(base)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise InvocationError(f"the Lambda endpoint {base!r} of target {self.target.name!r} is not an "
                                  "http(s) URL; fix [aws] lambda_endpoint_url / endpoint_url")
        port = parts.port or (443 if scheme == "https" else 80)
        proxy, proxy_headers = None, ()
        proxy_url = get_environ_proxies(base).get(scheme)
        if proxy_url:
            if "://" not in proxy_url:
                proxy_url = "http://" + proxy_url
            proxy_parts = urlsplit(proxy_url)
            proxy = (proxy_parts.hostname or "", proxy_parts.port or (443 if proxy_parts.scheme == "https" else 80))
            proxy_headers = tuple(ProxyConfiguration().proxy_headers_for(proxy_url).items())
        route = (Route(scheme, parts.hostname, port, proxy, proxy_headers), parts.path.rstrip("/"))
        with self._lock:
            self._routes[base] = route
        return route

    def _prepare(self, path: str, payload: bytes, headers: Mapping[str, str]) -> _Request:
        """Sign the request for the current endpoint (botocore's SigV4, after the
        ``before_sign`` callbacks)."""
        from botocore.awsrequest import AWSRequest

        base = self._endpoint()
        route, prefix = self._route(base)
        request_headers = dict(headers)
        for callback in self._before_sign:
            callback(request_headers)
        request = AWSRequest(method="POST", url=base + path, data=payload, headers=request_headers)
        self._signer().add_auth(request)
        target = base + path if route.absolute_form else prefix + path
        return _Request(route, target, dict(request.headers.items()))

    # -- one Invoke -------------------------------------------------------------------------

    def invoke(self, function_name: str, payload: bytes, headers: Mapping[str, str]) -> LambdaHttpResponse:
        """POST ``payload`` to the function's ``invocations`` and wait for the answer; retries
        as the module says. Raises :class:`LambdaServiceError` (Lambda's answer),
        :class:`~lambdarun.errors.InvocationOutcomeUnknownError` (sent, answer lost or
        unusable) or :class:`~lambdarun.errors.InvocationError` (never sent)."""
        if self._thread.in_loop_thread():
            raise RuntimeError("LambdaHttp.invoke would block the invoker's own event loop: a done "
                               "callback of an invoke future must hand blocking work to another thread")
        future = self.submit(function_name, payload, headers)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise InvocationOutcomeUnknownError(
                f"the invoker of target {self.target.name!r} was closed while an Invoke was in flight; "
                "the function may have run") from None

    def submit(self, function_name: str, payload: bytes, headers: Mapping[str, str],
               finish: Callable[[LambdaHttpResponse], T] | None = None,
               failed: Callable[[Exception], BaseException] | None = None) -> concurrent.futures.Future[Any]:
        """Send the Invoke from the loop thread; its future resolves to ``finish(response)``
        (else the response) or fails with ``failed(error)`` (else the error). ``finish`` and
        ``failed`` and the future's done callbacks run on the loop thread: they must not
        block (hand blocking work to another thread)."""
        from botocore.utils import percent_encode

        path = f"/2015-03-31/functions/{percent_encode(function_name)}/invocations"
        try:
            request = self._prepare(path, payload, headers)
        except Exception as exc:  # noqa: BLE001 - e.g. no credentials: the future carries it
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_exception(failed(exc) if failed is not None else exc)
            return future
        return self._thread.run(self._invoke(path, payload, headers, request, finish, failed))

    async def _invoke(self, path: str, payload: bytes, headers: Mapping[str, str], request: _Request,
                      finish: Callable[[LambdaHttpResponse], T] | None,
                      failed: Callable[[Exception], BaseException] | None) -> Any:
        """The Invoke with its retries (one coroutine per Invoke: a thousand in flight are a
        thousand of these, so nothing else is awaited as a coroutine on the common path)."""
        attempt, moved = 1, 0
        try:
            while True:
                try:
                    answer = await self._connections.send(request.route, "POST", request.target, request.headers,
                                                          payload)
                except ConnectFailed as exc:
                    if moved < 3 and await self._in_thread(self._connection_failed, exc, sent=False):
                        moved += 1  # the endpoint moved (a restarted local stack): send it there now
                    elif self._may_retry(attempt, _TIMEOUT_RETRY_COST):
                        await asyncio.sleep(self._backoff(attempt, _OTHER_SCALE))
                        attempt += 1
                    else:
                        raise InvocationError(
                            f"could not connect to the Lambda endpoint of target {self.target.name!r} "
                            f"after {attempt} attempts: {exc}") from exc
                    request = await self._in_thread(self._prepare, path, payload, headers)
                    continue
                except AnswerLost as exc:
                    raise await self._lost(exc) from None
                response = LambdaHttpResponse(answer.status, answer.headers, answer.body)
                if response.status < 300:
                    self._quota.release(_RETRY_COST if attempt > 1 else 1)
                    return finish(response) if finish is not None else response
                error = _service_error(response)
                if (error.status == 429 or error.code in _THROTTLING_CODES) and self._may_retry(attempt, _RETRY_COST):
                    await asyncio.sleep(self._backoff(attempt, _THROTTLING_SCALE))
                    attempt += 1
                    request = await self._in_thread(self._prepare, path, payload, headers)
                    continue
                raise error
        except Exception as exc:
            mapped = failed(exc) if failed is not None else exc
            if mapped is exc:
                raise
            raise mapped from exc

    async def _lost(self, exc: AnswerLost) -> InvocationOutcomeUnknownError:
        """The request went out and no usable answer came back (the target may react first:
        the local one raises when its stack is gone)."""
        if isinstance(exc, AnswerTooLarge):
            return InvocationOutcomeUnknownError(
                f"the Lambda endpoint of {self.target.name!r} answered with more than Lambda's "
                f"{SYNC_RESPONSE_LIMIT}-byte response limit ({exc}); the function may have run")
        await self._in_thread(self._connection_failed, exc, sent=True)
        return InvocationOutcomeUnknownError(
            f"the connection to {self.target.name!r} was lost after the Invoke was sent "
            f"({exc}); the function may have run")

    async def _in_thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking work (signing with refreshed credentials, the target's restart check) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(None, lambda: function(*args, **kwargs))

    def _may_retry(self, attempt: int, cost: int) -> bool:
        return attempt <= self.max_attempts and self._quota.acquire(cost)

    @staticmethod
    def _backoff(attempt: int, scale: float) -> float:
        return random.random() * min(scale * 2 ** (attempt - 1), _MAX_BACKOFF)

    def _connection_failed(self, exc: BaseException, *, sent: bool) -> bool:
        """Ask the target (the local one follows a restarted stack); True: send again now."""
        hook = getattr(self.target, "lambda_connection_failed", None)
        return bool(hook(exc, sent=sent)) if hook is not None else False

    def close(self) -> None:
        """Close the kept connections and stop the loop thread (Invokes in flight are cancelled)."""
        self._thread.close(self._connections.close())


def _service_error(response: LambdaHttpResponse) -> LambdaServiceError:
    """Lambda's error: the code from ``x-amzn-ErrorType`` (else the body's ``__type`` /
    ``code``, else the status), the message from the body."""
    body: Any = {}
    try:
        body = json.loads(response.payload) if response.payload else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = (response.headers.get("x-amzn-ErrorType") or "").split(":", 1)[0]
    if not code:
        raw = body.get("__type") or body.get("code") or body.get("Code") or ""
        code = str(raw).rsplit("#", 1)[-1]
    if not code:
        code = {413: "RequestEntityTooLargeException", 429: "TooManyRequestsException"}.get(response.status,
                                                                                          str(response.status))
    message = body.get("message") or body.get("Message") or body.get("errorMessage") or ""
    if not isinstance(message, str):
        message = json.dumps(message)
    reason = body.get("Reason")
    return LambdaServiceError(response.status, code[:200], message[:2000],
                              reason=reason if isinstance(reason, str) else None)
