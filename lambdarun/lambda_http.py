"""Lambda's ``Invoke`` over one keep-alive connection pool: the hot path of every invocation.

boto3's ``lambda.invoke`` costs ~0.45 ms of CPU per call in one thread and ~1.3 ms per call
from a 1,000-thread pool (its event system, parameter validation, model-driven parsing,
and locks that the threads contend for). This client sends the same request with the same
well-kept parts, and nothing else per call:

* the request is signed by botocore's own SigV4 signer (:class:`botocore.auth.SigV4Auth`)
  with the target's botocore credentials (``get_frozen_credentials()`` per request, so
  refreshable credentials refresh as botocore refreshes them);
* it goes over urllib3's connection pool (what botocore uses underneath): keep-alive,
  ``TCP_NODELAY``, botocore's CA bundle and the environment's proxies as botocore resolves them, as many idle connections kept as were
  in flight (up to :data:`MAX_IDLE_CONNECTIONS`), never retried by urllib3 itself;
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

import json
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from lambdarun.errors import InvocationError, InvocationOutcomeUnknownError
from lambdarun.limits import SYNC_RESPONSE_LIMIT

if TYPE_CHECKING:
    from lambdarun.types import Target

__all__ = ["LambdaHttp", "LambdaHttpResponse", "LambdaServiceError", "MAX_IDLE_CONNECTIONS"]

log = structlog.get_logger(__name__)

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


class _NotSent(Exception):
    """The connection could not be opened: nothing was sent (botocore's EndpointConnectionError)."""


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
        import urllib3
        from botocore.retries.quota import RetryQuota

        self.target = target
        self.max_attempts = max_attempts
        self._quota = RetryQuota()
        options = urllib3.connection.HTTPConnection.default_socket_options + [
            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
        self._pool_options: dict[str, Any] = dict(
            maxsize=MAX_IDLE_CONNECTIONS, block=False, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout), socket_options=options,
        )
        self._ca_certs: str | None = None  # resolved with the first HTTPS pool
        self._pools: dict[str, tuple[Any, bool]] = {}  # endpoint -> (urllib3 pool, absolute-form URLs)
        self._lock = threading.Lock()
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

    # -- one Invoke -------------------------------------------------------------------------

    def invoke(self, function_name: str, payload: bytes, headers: Mapping[str, str]) -> LambdaHttpResponse:
        """POST ``payload`` to the function's ``invocations``; retries as the module says.
        Raises :class:`LambdaServiceError` (Lambda's answer),
        :class:`~lambdarun.errors.InvocationOutcomeUnknownError` (sent, answer lost or
        unusable) or :class:`~lambdarun.errors.InvocationError` (never sent)."""
        from botocore.utils import percent_encode

        path = f"/2015-03-31/functions/{percent_encode(function_name)}/invocations"
        attempt = 1
        while True:
            try:
                response = self._send(path, payload, headers)
            except _NotSent as exc:
                if self._may_retry(attempt, _TIMEOUT_RETRY_COST):
                    self._sleep(attempt, _OTHER_SCALE)
                    attempt += 1
                    continue
                raise InvocationError(
                    f"could not connect to the Lambda endpoint of target {self.target.name!r} "
                    f"after {attempt} attempts: {exc}") from exc.__cause__
            if response.status < 300:
                self._quota.release(_RETRY_COST if attempt > 1 else 1)
                return response
            error = _service_error(response)
            if error.status == 429 or error.code in _THROTTLING_CODES:
                if self._may_retry(attempt, _RETRY_COST):
                    self._sleep(attempt, _THROTTLING_SCALE)
                    attempt += 1
                    continue
            raise error

    def _may_retry(self, attempt: int, cost: int) -> bool:
        return attempt <= self.max_attempts and self._quota.acquire(cost)

    @staticmethod
    def _sleep(attempt: int, scale: float) -> None:
        time.sleep(random.random() * min(scale * 2 ** (attempt - 1), _MAX_BACKOFF))

    def _send(self, path: str, payload: bytes, headers: Mapping[str, str]) -> LambdaHttpResponse:
        import urllib3
        from botocore.awsrequest import AWSRequest

        for _moved in range(3):
            base = self._endpoint()
            request_headers = dict(headers)
            for callback in self._before_sign:
                callback(request_headers)
            request = AWSRequest(method="POST", url=base + path, data=payload, headers=request_headers)
            self._signer().add_auth(request)
            try:
                parts = urlsplit(base)  # an endpoint URL may carry a path prefix, as botocore allows
                pool, absolute = self._pool(f"{parts.scheme}://{parts.netloc}")
                raw = pool.urlopen(
                    "POST", base + path if absolute else parts.path + path, body=payload,
                    headers=dict(request.headers.items()), preload_content=False, redirect=False,
                    assert_same_host=not absolute)
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
                if self._connection_failed(exc, sent=False):
                    continue  # the endpoint moved (a restarted local stack): send it there now
                raise _NotSent(str(exc)) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                self._connection_failed(exc, sent=True)
                raise InvocationOutcomeUnknownError(
                    f"the connection to {self.target.name!r} was lost after the Invoke was sent "
                    f"({type(exc).__name__}: {exc}); the function may have run") from exc
            try:
                return self._read(raw)
            finally:
                raw.release_conn()
        raise _NotSent("the endpoint kept moving")

    def _pool(self, base: str) -> tuple[Any, bool]:
        """The pool for ``base``, and whether requests on it name the absolute URL (plain
        HTTP through a proxy)."""
        pool = self._pools.get(base)
        if pool is None:
            with self._lock:
                pool = self._pools.get(base)
                if pool is None:
                    pool = self._new_pool(base)
                    self._pools[base] = pool
        return pool

    def _new_pool(self, base: str) -> tuple[Any, bool]:
        """A pool to ``base`` as botocore would connect: its CA bundle (``[aws]`` config /
        ``AWS_CA_BUNDLE``, else certifi's), and the ``HTTP(S)_PROXY`` the environment names for
        that host unless ``NO_PROXY`` exempts it (a proxied HTTPS endpoint is tunnelled with
        CONNECT: the proxy sees no request)."""
        import urllib3
        from botocore.httpsession import get_cert_path
        from botocore.utils import get_environ_proxies

        extra: dict[str, Any] = {}
        if base.startswith("https:"):
            if self._ca_certs is None:
                bundle = getattr(self.target, "ca_bundle", None)
                self._ca_certs = get_cert_path((bundle() if bundle is not None else None) or True)
            extra["ca_certs"] = self._ca_certs
        proxy = get_environ_proxies(base).get(urlsplit(base).scheme)
        if proxy:
            manager = urllib3.ProxyManager(proxy, num_pools=1, **self._pool_options, **extra)
            return manager.connection_from_url(base), base.startswith("http:")
        return urllib3.connection_from_url(base, **self._pool_options, **extra), False

    def _connection_failed(self, exc: BaseException, *, sent: bool) -> bool:
        """Ask the target (the local one follows a restarted stack); True: send again now."""
        hook = getattr(self.target, "lambda_connection_failed", None)
        return bool(hook(exc, sent=sent)) if hook is not None else False

    def _read(self, raw: Any) -> LambdaHttpResponse:
        import urllib3

        try:
            length = raw.headers.get("Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_RESPONSE_BYTES):
                raise InvocationOutcomeUnknownError(
                    f"the Lambda endpoint of {self.target.name!r} answered with a Content-Length of "
                    f"{length[:40]!r}, not a size up to Lambda's {SYNC_RESPONSE_LIMIT}-byte response limit; "
                    "the function may have run")
            data = raw.read(MAX_RESPONSE_BYTES + 1)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise InvocationOutcomeUnknownError(
                f"the answer of {self.target.name!r} to an Invoke was cut off ({type(exc).__name__}: "
                f"{exc}); the function may have run") from exc
        if len(data) > MAX_RESPONSE_BYTES:
            raw.close()  # never reuse a connection mid-answer
            raise InvocationOutcomeUnknownError(
                f"the Lambda endpoint of {self.target.name!r} answered with more than Lambda's "
                f"{SYNC_RESPONSE_LIMIT}-byte response limit; the function may have run")
        return LambdaHttpResponse(raw.status, raw.headers, data)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool, _absolute in pools:
            pool.close()


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
