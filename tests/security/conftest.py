"""Fixtures of the security tests: a real local stack, raw HTTP with a timeout, SigV4 signing
(also with a chosen date or key), and marker files an attacking payload would create."""

from __future__ import annotations

import datetime as dt
import socket
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lambdarun.local import LocalStack
from lambdarun.local.testing import local_stack_fixture, make_zip

#: one private stack for every security test (nothing else shares it)
local_stack = local_stack_fixture(scope="session", async_retry_delay=0.1, max_concurrency=8)

#: what a browser adds to a cross-origin "simple" request (no preflight needed)
BROWSER = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def raw_http(url: str, method: str, path: str, *, headers: Mapping[str, str] | None = None,
             body: bytes = b"", send_body: bool = True, timeout: float = 15.0) -> Response:
    """One request over a plain socket (nothing added: no Host unless given, no length
    unless given); the answer must come within ``timeout`` seconds (else socket.timeout)."""
    parts = urllib.parse.urlsplit(url)
    lines = [f"{method} {path} HTTP/1.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        s.sendall(head + (body if send_body else b""))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        hdrs = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        length = int(hdrs.get("content-length", "0"))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    return Response(status, hdrs, rest[:length])


def signed_headers(url: str, method: str, body: bytes, *, key: str, secret: str,
                   service: str = "lambda", region: str = "us-east-1",
                   when: dt.datetime | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """SigV4 headers (Host, X-Amz-Date, Authorization, ...) as botocore computes them, for a
    chosen key/secret and date (``when``; default now)."""
    req = AWSRequest(method=method, url=url, data=body, headers=dict(extra or {}))
    signer = (S3SigV4Auth if service == "s3" else SigV4Auth)(Credentials(key, secret), service, region)
    stamp = (when or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    req.context["timestamp"] = stamp
    signer._modify_request_before_signing(req)  # botocore's own steps of add_auth()
    canonical = signer.canonical_request(req)
    signature = signer.signature(signer.string_to_sign(req, canonical), req)
    signer._inject_signature_to_request(req, signature)
    out = dict(req.headers.items())
    out["Host"] = urllib.parse.urlsplit(url).netloc
    return out


@pytest.fixture
def sign(local_stack: LocalStack) -> Callable[..., dict[str, str]]:
    """``sign(url, method, body, **kw)``: headers signed with the stack's own credentials."""

    def make(url: str, method: str = "GET", body: bytes = b"", **kw: Any) -> dict[str, str]:
        kw.setdefault("key", local_stack.credentials.access_key_id)
        kw.setdefault("secret", local_stack.credentials.secret_access_key)
        return signed_headers(url, method, body, **kw)

    return make


def marker_source(marker: Path) -> str:
    """A handler module that creates ``marker`` on import and when it runs."""
    return (f"open({str(marker)!r}, 'w').write('import')\n"
            f"def handler(event, context):\n    open({str(marker)!r}, 'w').write('ran')\n    return 'ran'\n")


def marker_zip(marker: Path) -> bytes:
    return make_zip({"app.py": marker_source(marker)})


def create_function_body(name: str, zip_bytes: bytes) -> bytes:
    import base64
    import json

    return json.dumps({
        "FunctionName": name, "Runtime": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "Role": "arn:aws:iam::123456789012:role/x", "Handler": "app.handler",
        "Code": {"ZipFile": base64.b64encode(zip_bytes).decode()},
    }).encode()


def function_exists(local_stack: LocalStack, name: str) -> bool:
    lam = local_stack.client("lambda")
    try:
        lam.get_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        return False
    return True


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "attack-ran"
    yield path
