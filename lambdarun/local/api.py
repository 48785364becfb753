"""The Lambda REST API front: the HTTP handler (browser, Host and SigV4 checks, request size
limits, AWS error shapes) and the router from a method and path to an operation.

New operation families (versions and aliases, layers, durable executions) get a module of
their own and one branch in :meth:`LambdaApi.route`.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from lambdarun.local import auth
from lambdarun.local._http import FastHandler
from lambdarun.local import code_location
from lambdarun.local.account import account_settings
from lambdarun.local.control import ControlPlane
from lambdarun.local.extension import ExtensionApi
from lambdarun.local.invoke import Invoker
from lambdarun.local.policy import Policies
from lambdarun.local.options import (
    ASYNC_REQUEST_LIMIT,
    CODE_REQUEST_LIMIT,
    OTHER_REQUEST_LIMIT,
    SYNC_REQUEST_LIMIT,
)
from lambdarun.local.shapes import ApiError, Reply, function_name, json_body, ok, unknown_operation
from lambdarun.local.validation import check_request
from lambdarun.local.versions import Versions

log = structlog.get_logger(__name__)

_API = "/2015-03-31/functions"
#: the durable-execution API (served by an extension: lambdarun_lambda_service_extensions)
_DURABLE = "/2025-12-01/"


class LambdaApi:
    """What the API's HTTP handler serves: the allowed Host names, the signature verifier and
    the routes to the control plane, the data plane and the extension API."""

    def __init__(self, verifier: auth.SigV4Verifier, control: ControlPlane, invoker: Invoker,
                 extension: ExtensionApi) -> None:
        self.verifier = verifier
        self.control = control
        self.invoker = invoker
        self.extension = extension
        self.versions = Versions(control)
        self.policies = Policies(control)
        self.code = code_location.CodeLocations(control.registry)
        #: plugins' API families (lambdarun_lambda_service_extensions), e.g. durable executions
        self.extensions: list[Any] = []
        #: Host headers the API answers (requests without one are answered too); set with url
        self.allowed_hosts: frozenset[str] = frozenset()
        self.url = ""

    def bind(self, url: str, port: int) -> None:
        """Serve as ``url`` (the API's server is listening on ``port``)."""
        self.url = url
        self.code.base_url = url
        self.allowed_hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})

    def route(self, method: str, path: str, query: dict[str, str], headers: Any,
              body: bytes, *, raw_query: str = "") -> Reply:
        check_request(method, path, query, headers, body)  # the service model's constraints
        if path.startswith(_API):
            rest = path[len(_API):].strip("/")
            if not rest:
                if method == "POST":
                    return self.control.create_function(json_body(body))
                if method == "GET":
                    return self.control.list_functions(query)
            else:
                raw, _, sub = rest.partition("/")
                name, qualifier = function_name(raw)
                if qualifier and query.get("Qualifier") not in (None, qualifier):
                    raise ApiError(400, "InvalidParameterValueException",
                                   "The derived qualifier from the function name does not match "
                                   "the specified qualifier.")
                qualifier = query.get("Qualifier", qualifier)
                if sub == "invocations" and method == "POST":
                    return self.invoker.invoke(name, qualifier, headers, body)
                if sub.partition("/")[0] in ("versions", "aliases"):
                    return self.versions.route(method, name, qualifier, sub, query, body)
                if sub.partition("/")[0] == "policy":
                    return self.policies.route(method, name, qualifier, sub, query, body)
                if sub == "" and method == "GET":
                    return ok(self.control.get_function(name, qualifier, location=self.code.url))
                if sub == "" and method == "DELETE":
                    if qualifier:
                        return self.versions.delete_version(name, qualifier)
                    return self.control.delete_function(name)
                if sub == "configuration" and method == "GET":
                    return ok(self.control.registry.lookup(name, qualifier).configuration())
                if sub == "configuration" and method == "PUT":
                    return ok(self.control.update_configuration(name, json_body(body)))
                if sub == "code" and method == "PUT":
                    return ok(self.control.update_code(name, json_body(body)))
        eic = "/2019-09-25/functions/"
        if path.startswith(eic) and "/event-invoke-config" in path:
            raw, _, sub = path[len(eic):].partition("/event-invoke-config")
            name, qualifier = function_name(raw)
            return self.control.event_invoke_config(method, name, query.get("Qualifier", qualifier), sub, body)
        for prefix in ("/2017-10-31/functions/", "/2019-09-30/functions/"):
            if path.startswith(prefix) and path.endswith("/concurrency"):
                name, _ = function_name(path[len(prefix):-len("/concurrency")])
                return self.control.concurrency(method, name, body)
        if path.rstrip("/") == "/2016-08-19/account-settings" and method == "GET":
            return ok(account_settings(self.control.registry, self.control.options))
        tags = "/2017-03-31/tags/"
        if path.startswith(tags):
            return self.control.tags(method, unquote(path[len(tags):]), body, raw_query)
        if path.startswith(_DURABLE):
            # a list parameter (Statuses=A&Statuses=B) reaches the extension as "A,B"
            multi = {k: ",".join(v) for k, v in parse_qs(raw_query).items()}
            for ext in self.extensions:
                reply = ext.route(method, path, multi, headers, body)
                if reply is not None:
                    return reply
        if path.startswith("/_lambdarun/"):
            return self.extension.route(method, path, query, body)
        raise unknown_operation(method, path)


class ApiHandler(FastHandler):
    server_version = "lambdarun-local-lambda"

    def _refuse(self, err: ApiError, *, close: bool = True) -> None:
        # the body may be unread: never take it for the next request
        self.close_connection = self.close_connection or close
        self.reply(err.status, err.body(), {"X-Amzn-ErrorType": err.code,
                                            "x-amzn-RequestId": str(uuid.uuid4())})
        if close:
            self.discard_input()

    def _dispatch(self, method: str) -> None:
        service: LambdaApi = self.server.app
        marker = auth.browser_marker(self.headers.get)
        if marker is not None or method == "OPTIONS":
            # a web page must never reach this API (CORS "simple" requests need no preflight)
            log.warning("local lambda API refused a browser request", header=marker or "OPTIONS")
            self._refuse(ApiError(403, "AccessDeniedException",
                                  "Refused: a browser request; the local Lambda API answers "
                                  "signed API calls only."))
            return
        host = self.headers.get("Host")
        if host is not None and host not in service.allowed_hosts:
            # DNS rebinding: a web page must not reach this API through a name of its own
            log.warning("local lambda API refused a request for another host", host=host)
            self._refuse(ApiError(403, "AccessDeniedException",
                                  f"Host {host!r} refused: address this service as {service.url}"))
            return
        split = urlsplit(self.path)
        if split.path.startswith(code_location.PREFIX):
            # a presigned Code.Location URL: its query string is its only credential
            self._download_code(service, method, split.path, split.query)
            return
        try:
            authz = service.verifier.authorization(self.headers.get("Authorization"), split.query)
        except auth.AuthFailure as failure:
            self._refuse(_auth_error(failure))
            return
        limit, operation = _request_limit(method, split.path, self.headers)
        try:
            if method in ("POST", "PUT") and self.headers.get("Content-Length") is None and \
                    "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
                raise ValueError("Content-Length is required")
            body = self.read_body(limit)
        except OverflowError:
            self._refuse(ApiError(413, "RequestEntityTooLargeException",
                                  f"Request must be smaller than {limit} bytes for the {operation} operation"))
            return
        except ValueError as e:
            self._refuse(ApiError(400, "InvalidRequestContentException", f"Invalid request body: {e}"))
            return
        try:
            service.verifier.verify(authz, method, self.path, self.headers.items(), body)
        except auth.AuthFailure as failure:
            self._refuse(_auth_error(failure), close=False)
            return
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            status, payload, headers = service.route(method, split.path, query, self.headers, body,
                                                     raw_query=split.query)
        except ApiError as e:
            headers = {"X-Amzn-ErrorType": e.code, "x-amzn-RequestId": str(uuid.uuid4())}
            if e.status == 429:
                headers["Retry-After"] = "1"
            self.reply(e.status, e.body(), headers)
            return
        except (TypeError, ValueError, AttributeError) as e:
            # a field of the wrong type or shape that no specific check caught
            log.warning("local lambda API refused a malformed request", path=split.path,
                        error=f"{type(e).__name__}: {e}")
            self._refuse(ApiError(400, "InvalidParameterValueException",
                                  f"A request field has the wrong type or shape: {e}"), close=False)
            return
        except Exception as e:  # pragma: no cover - report bugs as AWS ServiceException
            log.exception("local lambda API error", path=self.path)
            err = ApiError(500, "ServiceException", f"{type(e).__name__}: {e}")
            self.reply(500, err.body(), {"X-Amzn-ErrorType": err.code})
            return
        self.reply(status, payload, headers)

    def _download_code(self, service: LambdaApi, method: str, path: str, query: str) -> None:
        try:
            if method != "GET":
                raise code_location.Refusal(405, "MethodNotAllowed",
                                            "The specified method is not allowed against this resource.")
            if self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding"):
                raise code_location.Refusal(400, "InvalidRequest", "A download has no body.")
            data = service.code.download(path, query)
        except code_location.Refusal as refusal:
            log.warning("local lambda API refused a code download", reason=refusal.code)
            self.close_connection = True
            self.reply(refusal.status, refusal.body(), content_type="application/xml")
            return
        self.reply(200, data, content_type="application/zip")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:  # a CORS preflight: refused, no CORS headers
        self._dispatch("OPTIONS")


def _auth_error(failure: auth.AuthFailure) -> ApiError:
    """A refused signature as Lambda answers it (403)."""
    if failure.kind in ("missing", "unknown_key"):
        return ApiError(403, "UnrecognizedClientException",
                        "The security token included in the request is invalid.")
    return ApiError(403, "InvalidSignatureException", failure.message)


def _request_limit(method: str, path: str, headers: Any) -> tuple[int, str]:
    """(largest body, operation name) of a request, known before its body is read."""
    if path.startswith(_API):
        rest = path[len(_API):].strip("/")
        if method == "POST" and rest.endswith("/invocations"):
            if (headers.get("X-Amz-Invocation-Type") or "") == "Event":
                return ASYNC_REQUEST_LIMIT, "InvokeAsync"
            return SYNC_REQUEST_LIMIT, "InvokeFunction"
        if method == "POST" and not rest:
            return CODE_REQUEST_LIMIT, "CreateFunction"
        if method == "PUT" and rest.endswith("/code"):
            return CODE_REQUEST_LIMIT, "UpdateFunctionCode"
    return OTHER_REQUEST_LIMIT, f"{method} {path.split('?', 1)[0][:100]}"
