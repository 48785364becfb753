"""The WSGI front of moto's server: browsers, OPTIONS, bodies beyond the limit and unsigned
requests are refused with each service's own error shape; moto's CORS headers are stripped."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

import structlog

from lambdarun.local.sigv4 import AuthFailure, SigV4Verifier, browser_marker, content_length

log = structlog.get_logger(__name__)

#: moto's body limit: S3's single PutObject limit (5 GiB)
MOTO_BODY_LIMIT = 5 * 1024**3


_SIGNATURE_MESSAGE = ("The request signature we calculated does not match the signature you provided. "
                      "Check your AWS Secret Access Key and signing method. Consult the service "
                      "documentation for details.")


def _s3_error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>' + code + "</Code><Message>"
            + escape(message) + "</Message><RequestId>" + uuid.uuid4().hex.upper()[:16]
            + "</RequestId></Error>")
    return status, "application/xml", body.encode()


def _query_error(code: str, message: str) -> tuple[int, str, bytes]:
    body = ("<ErrorResponse><Error><Type>Sender</Type><Code>" + code + "</Code><Message>"
            + escape(message) + "</Message></Error><RequestId>" + str(uuid.uuid4())
            + "</RequestId></ErrorResponse>")
    return 403, "text/xml", body.encode()


def _json_error(code: str, message: str) -> tuple[int, str, bytes]:
    body = json.dumps({"__type": f"com.amazon.coral.service#{code}", "message": message})
    return 400, "application/x-amz-json-1.0", body.encode()


def moto_error(environ: Mapping[str, Any], failure: AuthFailure) -> tuple[int, str, bytes]:
    """(status, content type, body) of ``failure`` in the shape of the service addressed."""
    kind, message = failure.kind, failure.message
    target = environ.get("HTTP_X_AMZ_TARGET")
    ctype = environ.get("CONTENT_TYPE") or ""
    query = environ.get("QUERY_STRING") or ""
    if target:  # JSON protocols (DynamoDB, CloudWatch Logs, ...): AWS answers 400
        code = {"missing": "MissingAuthenticationTokenException", "unknown_key": "UnrecognizedClientException",
                "browser": "AccessDeniedException"}.get(kind, "InvalidSignatureException")
        if kind == "browser":
            return 403, "application/x-amz-json-1.0", json.dumps(
                {"__type": f"com.amazon.coral.service#{code}", "message": message}).encode()
        return _json_error(code, message)
    if "x-www-form-urlencoded" in ctype or "Action=" in query:  # query protocols (IAM, STS, SQS)
        code = {"missing": "MissingAuthenticationToken", "unknown_key": "InvalidClientTokenId",
                "browser": "AccessDenied"}.get(kind, "SignatureDoesNotMatch")
        return _query_error(code, message)
    # S3 (REST-XML)
    if kind == "unknown_key":
        return _s3_error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    if kind == "signature":
        return _s3_error(403, "SignatureDoesNotMatch", message)
    if kind == "expired":
        return _s3_error(403, "RequestTimeTooSkewed",
                         "The difference between the request time and the current time is too large.")
    return _s3_error(403, "AccessDenied", "Access Denied" if kind == "missing" else message)


def _environ_headers(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out.append((key[5:].replace("_", "-").lower(), value))
    if environ.get("CONTENT_TYPE"):
        out.append(("content-type", environ["CONTENT_TYPE"]))
    if environ.get("CONTENT_LENGTH"):
        out.append(("content-length", environ["CONTENT_LENGTH"]))
    return out


class MotoFront:
    """WSGI middleware in front of moto: no browsers, no CORS, signed requests only.

    :param app: moto's WSGI application.
    :param verifier: the stack's :class:`SigV4Verifier`.
    :param body_limit: largest request body accepted (checked from ``Content-Length``).
    """

    def __init__(self, app: Any, verifier: SigV4Verifier, *, body_limit: int = MOTO_BODY_LIMIT) -> None:
        self.app = app
        self.verifier = verifier
        self.body_limit = body_limit

    def _refuse(self, environ: Mapping[str, Any], start_response: Any, failure: AuthFailure) -> list[bytes]:
        status, ctype, body = moto_error(environ, failure)
        log.warning("local moto endpoint refused a request", reason=failure.kind,
                    method=environ.get("REQUEST_METHOD"), path=environ.get("PATH_INFO"))
        return self._send(start_response, status, ctype, body)

    @staticmethod
    def _send(start_response: Any, status: int, ctype: str, body: bytes) -> list[bytes]:
        from http import HTTPStatus

        start_response(f"{status} {HTTPStatus(status).phrase}", [
            ("Content-Type", ctype), ("Content-Length", str(len(body))),
        ])
        return [body]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        marker = browser_marker(lambda name: environ.get("HTTP_" + name.upper().replace("-", "_")))
        if marker is not None:
            return self._refuse(environ, start_response, AuthFailure(
                "browser", f"Refused: a browser request ({marker} header); the local stack "
                "answers signed API calls only."))
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "OPTIONS":
            return self._refuse(environ, start_response, AuthFailure(
                "browser", "Refused: CORS preflight; the local stack answers signed API calls only."))
        try:
            auth = self.verifier.authorization(environ.get("HTTP_AUTHORIZATION"),
                                               environ.get("QUERY_STRING") or "")
        except AuthFailure as failure:
            return self._refuse(environ, start_response, failure)
        chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
        try:
            length = content_length(environ.get("CONTENT_LENGTH") or None, self.body_limit, required=False)
        except OverflowError:
            return self._send(start_response, *_s3_error(
                413, "EntityTooLarge", f"Your proposed upload exceeds the maximum allowed size ({self.body_limit} bytes)."))
        except ValueError as e:
            return self._send(start_response, *_s3_error(400, "InvalidArgument", str(e)))
        stream = environ["wsgi.input"]
        if chunked:
            body = stream.read(self.body_limit + 1)
            if len(body) > self.body_limit:
                return self._send(start_response, *_s3_error(
                    413, "EntityTooLarge", f"Your proposed upload exceeds the maximum allowed size ({self.body_limit} bytes)."))
        else:
            body = stream.read(length) if length else b""
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if not raw:
            from urllib.parse import quote

            raw = quote(environ.get("PATH_INFO", "/"))
            if environ.get("QUERY_STRING"):
                raw += "?" + environ["QUERY_STRING"]
        try:
            self.verifier.verify(auth, method, raw, _environ_headers(environ), body)
        except AuthFailure as failure:
            return self._refuse(environ, start_response, failure)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = False

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
            return start_response(status, kept, exc_info) if exc_info else start_response(status, kept)

        return self.app(environ, start)
