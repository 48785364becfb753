"""Who may talk to the local stack: SigV4 with the stack's own credentials, never a browser.

Every local endpoint (the Lambda API with its ``/_lambdarun/...`` extension API, and moto's
server for S3/DynamoDB/IAM/STS/...) accepts only requests signed with AWS Signature Version 4
using the stack's credentials: a random access key id and secret generated when the stack
starts (:class:`StackCredentials`), stored 0600 in the stack's run directory, given to the
stack's own clients and injected into every function's environment as its runtime
credentials (the way Lambda injects the execution role's). ``lambdarun local up`` prints
them in its ``export`` lines, so a plain boto3 client set up from those keeps working.

:class:`SigV4Verifier` recomputes the signature with botocore's signer over the headers the
client signed and the client's ``X-Amz-Date``, and compares in constant time. Requests
carrying browser markers (``Origin``, ``Sec-Fetch-*``) are refused before anything else: a
web page must never reach a local endpoint, signed or not.

:class:`MotoFront` is the WSGI middleware in front of moto's server (moto accepts anonymous
requests and answers CORS for any origin): browsers, OPTIONS, bodies beyond the limit and
unsigned requests are refused with each service's own error shape, and moto's CORS headers
are stripped from what it answers.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import string
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import attrs
import structlog

from lambdarun.private_files import write_private

__all__ = [
    "AuthFailure",
    "BROWSER_HEADERS",
    "CREDENTIALS_FILE",
    "MAX_SKEW_SECONDS",
    "MotoFront",
    "SigV4Verifier",
    "StackCredentials",
    "browser_marker",
    "content_length",
    "peer_held_by",
    "signed_request",
]

log = structlog.get_logger(__name__)

#: file in a stack's run directory holding its credentials (0600)
CREDENTIALS_FILE = "credentials.json"
#: AWS refuses a signature whose X-Amz-Date is more than 15 minutes off
MAX_SKEW_SECONDS = 15 * 60
#: request headers only browsers send (Fetch metadata, CORS)
BROWSER_HEADERS = ("origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user")
#: moto's body limit: S3's single PutObject limit (5 GiB)
MOTO_BODY_LIMIT = 5 * 1024**3
_ALGORITHM = "AWS4-HMAC-SHA256"
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_UNVERIFIED_PAYLOADS = frozenset({
    "UNSIGNED-PAYLOAD",
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
})


# ---------------------------------------------------------------------------------------
# credentials
# ---------------------------------------------------------------------------------------


@attrs.frozen(repr=False)
class StackCredentials:
    """A local stack's access key id and secret (generated per stack)."""

    access_key_id: str
    secret_access_key: str = attrs.field(repr=False)

    def __repr__(self) -> str:
        return f"StackCredentials(access_key_id={self.access_key_id!r}, secret_access_key=<hidden>)"

    @classmethod
    def generate(cls) -> StackCredentials:
        alphabet = string.ascii_uppercase + string.digits
        key_id = "LRLK" + "".join(secrets.choice(alphabet) for _ in range(16))
        return cls(key_id, secrets.token_urlsafe(30)[:40])

    def boto3_kwargs(self) -> dict[str, str]:
        """``aws_access_key_id`` / ``aws_secret_access_key`` for a boto3 session or client."""
        return {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}

    def environment(self) -> dict[str, str]:
        """``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}

    def save(self, path: Path) -> None:
        doc = {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}
        write_private(path, json.dumps(doc).encode())

    @classmethod
    def load(cls, path: Path) -> StackCredentials | None:
        """The credentials stored at ``path``, or None when absent or unreadable."""
        try:
            doc = json.loads(Path(path).read_text())
            return cls(str(doc["aws_access_key_id"]), str(doc["aws_secret_access_key"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> StackCredentials | None:
        env = os.environ if environ is None else environ
        key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        return cls(key, secret) if key and secret else None


# ---------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------


@attrs.frozen
class AuthFailure(Exception):
    """Why a request was refused. ``kind``: ``browser``, ``missing``, ``unknown_key``,
    ``signature``, ``expired``, ``presigned``."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


def browser_marker(get: Callable[[str], str | None]) -> str | None:
    """The first browser-only header present (``get`` looks a header up by name), or None."""
    for name in BROWSER_HEADERS:
        if get(name) is not None:
            return name
    return None


def content_length(raw: str | None, limit: int, *, required: bool) -> int:
    """The request's declared body size, checked before anything is read.

    Raises ``ValueError`` (malformed, negative, or missing where ``required``) or
    ``OverflowError`` (over ``limit``)."""
    if raw is None:
        if required:
            raise ValueError("Content-Length is required")
        return 0
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 19:
        raise ValueError(f"Content-Length must be a non-negative integer, got {raw[:40]!r}")
    n = int(raw)
    if n > limit:
        raise OverflowError(n)
    return n


@attrs.frozen
class _Authorization:
    key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def _amz_time(value: str) -> _dt.datetime:
    """``20250101T000000Z`` (strptime costs ~25 us: this is on every request's path)."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not (value[:8] + value[9:15]).isdigit():
        raise ValueError(value)
    return _dt.datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                        int(value[11:13]), int(value[13:15]), tzinfo=_dt.timezone.utc)


class SigV4Verifier:
    """Verifies AWS Signature Version 4 (header form) against one set of credentials.

    Two steps, so that a request with no or a foreign key is refused before its body is read:
    :meth:`authorization` (the ``Authorization`` header: present, well-formed, our key id)
    then :meth:`verify` (the signature over method, path, query, signed headers and body).
    """

    def __init__(self, credentials: StackCredentials, *, max_skew: float = MAX_SKEW_SECONDS) -> None:
        from botocore.credentials import Credentials

        self.credentials = credentials
        self.max_skew = max_skew
        self._botocore_credentials = Credentials(credentials.access_key_id, credentials.secret_access_key)

    def authorization(self, header: str | None, query: str = "") -> _Authorization:
        if not header:
            if "X-Amz-Signature=" in query or "X-Amz-Credential=" in query:
                raise AuthFailure("presigned", "Query-string (presigned) authentication is not "
                                  "accepted by the local stack; sign the request's headers.")
            raise AuthFailure("missing", "Request is missing Authentication Token")
        m = _AUTH_RE.match(header.strip())
        if m is None:
            if header.startswith(_ALGORITHM) or header.startswith("AWS "):
                raise AuthFailure("signature", "Authorization header is not a valid AWS4-HMAC-SHA256 signature.")
            raise AuthFailure("missing", "Request is missing Authentication Token")
        parts = m["credential"].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise AuthFailure("signature", f"Credential should be scoped correctly, got {m['credential']!r}.")
        key_id, date, region, service, _ = parts
        if not hmac.compare_digest(key_id.encode(), self.credentials.access_key_id.encode()):
            raise AuthFailure("unknown_key", "The security token included in the request is invalid.")
        signed = tuple(m["signed"].split(";"))
        return _Authorization(key_id, date, region, service, signed, m["signature"])

    def verify(
        self,
        auth: _Authorization,
        method: str,
        raw_path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        now: _dt.datetime | None = None,
    ) -> None:
        """Raise :class:`AuthFailure` unless the request is signed by our credentials.

        ``raw_path`` is the request target as sent (path and query, still percent-encoded);
        ``headers`` every (name, value) the request carried."""
        from botocore.awsrequest import AWSRequest

        wanted = set(auth.signed_headers)
        if "host" not in wanted:
            raise AuthFailure("signature", "The Host header must be signed.")
        picked: list[tuple[str, str]] = []
        amz_date = None
        content_sha = None
        for name, value in headers:
            lname = name.lower()
            if lname == "x-amz-date":
                amz_date = value
            elif lname == "x-amz-content-sha256":
                content_sha = value
            if lname in wanted:
                picked.append((lname, value))
        if amz_date is None or "x-amz-date" not in wanted:
            raise AuthFailure("signature", "The request must carry a signed X-Amz-Date header.")
        try:
            when = _amz_time(amz_date)
        except ValueError:
            raise AuthFailure("signature", f"X-Amz-Date {amz_date!r} is not a date like 20250101T000000Z.") from None
        current = now or _dt.datetime.now(_dt.timezone.utc)
        skew = (when - current).total_seconds()
        if abs(skew) > self.max_skew:
            fmt = "%Y%m%dT%H%M%SZ"
            minutes = int(self.max_skew // 60)
            if skew < 0:
                bound = (current - _dt.timedelta(seconds=self.max_skew)).strftime(fmt)
                message = (f"Signature expired: {amz_date} is now earlier than {bound} "
                           f"({current.strftime(fmt)} - {minutes} min.)")
            else:
                bound = (current + _dt.timedelta(seconds=self.max_skew)).strftime(fmt)
                message = (f"Signature not yet current: {amz_date} is still later than {bound} "
                           f"({current.strftime(fmt)} + {minutes} min.)")
            raise AuthFailure("expired", message)
        if auth.date != amz_date[:8]:
            raise AuthFailure("signature", "The credential scope's date does not match X-Amz-Date.")
        if content_sha is not None and content_sha not in _UNVERIFIED_PAYLOADS:
            if not hmac.compare_digest(content_sha.lower(), hashlib.sha256(body).hexdigest()):
                raise AuthFailure("signature", "The provided 'x-amz-content-sha256' header does not "
                                  "match what was computed.")
        if not _SIGNERS:
            _SIGNERS.update(_signer_classes())
        signer = _SIGNERS[auth.service == "s3"](self._botocore_credentials, auth.service, auth.region)
        host = next((v for n, v in picked if n == "host"), "")
        request = AWSRequest(method=method, url=f"http://{host}{raw_path}", data=body)
        given: dict[str, list[str]] = {}
        for name, value in picked:
            given.setdefault(name, []).append(value)
        request.context["timestamp"] = amz_date
        request.context["lambdarun_signed_headers"] = auth.signed_headers
        request.context["lambdarun_headers"] = given
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, auth.signature):
            raise AuthFailure(
                "signature",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method. Consult the service "
                "documentation for details.",
            )


def _signer_classes() -> dict[bool, type]:
    """botocore's signers (S3's and the general one) for verifying: restricted to the headers
    the client said it signed (``request.context["lambdarun_signed_headers"]``) and without
    botocore's request preparation (the body is already bytes); built once."""
    from botocore.auth import S3SigV4Auth, SigV4Auth

    def headers_to_sign(self: Any, request: Any) -> dict[str, list[str]]:
        given = request.context["lambdarun_headers"]
        return {name: given.get(name, []) for name in request.context["lambdarun_signed_headers"]}

    def canonical_headers(self: Any, headers_to_sign: dict[str, list[str]]) -> str:
        # botocore's rule: sorted names, values whitespace-folded, repeated values joined by ","
        return "\n".join(
            f"{name}:{','.join(' '.join(v.split()) for v in headers_to_sign[name])}"
            for name in sorted(headers_to_sign)
        )

    def payload(self: Any, request: Any) -> str:
        return hashlib.sha256(request.data or b"").hexdigest()

    methods = {"headers_to_sign": headers_to_sign, "canonical_headers": canonical_headers, "payload": payload}
    return {
        s3: type(f"Verifying{base.__name__}", (base,), methods)
        for s3, base in ((True, S3SigV4Auth), (False, SigV4Auth))
    }


_SIGNERS: dict[bool, type] = {}


# ---------------------------------------------------------------------------------------
# who is on the other end of a loopback connection (the Runtime API)
# ---------------------------------------------------------------------------------------


def _proc_net_address(address: tuple[str, int]) -> str:
    import socket

    ip, port = address[0], address[1]
    return f"{int.from_bytes(socket.inet_aton(ip), 'little'):08X}:{port:04X}"


def peer_held_by(conn: Any, pid: int) -> bool | None:
    """Whether the other end of the loopback TCP connection ``conn`` is a socket of process
    ``pid`` (from ``/proc/net/tcp`` and ``/proc/<pid>/fd``). None when this cannot be known
    here (no ``/proc``: not Linux)."""
    try:
        peer, local = conn.getpeername(), conn.getsockname()
        want = (_proc_net_address(peer), _proc_net_address(local))
    except (OSError, ValueError):
        return False
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            next(f, None)
            inode = None
            for line in f:
                fields = line.split()
                if len(fields) > 9 and (fields[1], fields[2]) == want:
                    inode = fields[9]
                    break
    except FileNotFoundError:
        return None
    if inode is None:
        return False
    target = f"socket:[{inode}]"
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


# ---------------------------------------------------------------------------------------
# signing our own plain-HTTP calls (extension API, moto-api)
# ---------------------------------------------------------------------------------------


def signed_request(
    url: str,
    credentials: StackCredentials,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    region: str = "us-east-1",
    service: str = "lambda",
) -> urllib.request.Request:
    """A ``urllib`` request signed with SigV4 (for the stack's non-boto3 endpoints)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url, data=data or b"", headers=dict(headers or {}))
    SigV4Auth(Credentials(credentials.access_key_id, credentials.secret_access_key), service, region).add_auth(req)
    return urllib.request.Request(url, data=data, method=method, headers=dict(req.headers.items()))


# ---------------------------------------------------------------------------------------
# moto's front
# ---------------------------------------------------------------------------------------

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
