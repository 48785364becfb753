"""Verifying SigV4 requests against the stack's credentials (:class:`SigV4Verifier`, with
botocore's signer), and refusing browsers before anything else (:func:`browser_marker`)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from lambdarun.local.credentials import StackCredentials

#: AWS refuses a signature whose X-Amz-Date is more than 15 minutes off
MAX_SKEW_SECONDS = 15 * 60
#: request headers only browsers send (Fetch metadata, CORS)
BROWSER_HEADERS = ("origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user")
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
    #: the temporary credentials (issued by the stack's STS) the key id names; None for the stack's own
    issued: Any = None


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
        issued = None
        if not hmac.compare_digest(key_id.encode(), self.credentials.access_key_id.encode()):
            # temporary credentials issued by this stack's STS for an allowed AssumeRole
            from lambdarun.local.sts_trust import issued_credentials

            issued = issued_credentials(self.credentials.access_key_id).get(key_id)
            if issued is None:
                raise AuthFailure("unknown_key", "The security token included in the request is invalid.")
        signed = tuple(m["signed"].split(";"))
        return _Authorization(key_id, date, region, service, signed, m["signature"], issued)

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

        headers = list(headers)
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
        signing_credentials = self._botocore_credentials
        if auth.issued is not None:
            from botocore.credentials import Credentials

            token = next((v for n, v in headers if n.lower() == "x-amz-security-token"), "")
            if not hmac.compare_digest(token.encode(), auth.issued.session_token.encode()):
                raise AuthFailure("unknown_key", "The security token included in the request is invalid.")
            signing_credentials = Credentials(auth.issued.access_key_id, auth.issued.secret_access_key,
                                              auth.issued.session_token)
        signer = _SIGNERS[auth.service == "s3"](signing_credentials, auth.service, auth.region)
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
