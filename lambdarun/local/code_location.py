"""``GetFunction``'s ``Code.Location``: a URL that downloads the function's deployment package,
as AWS's presigned S3 URL does (fetchable with a plain ``urllib.request.urlopen``, valid for
10 minutes).

The URL is ``<api>/_lambdarun-code/<name>/<version>?expires=<unix>&signature=<hex>``: the
signature is an HMAC-SHA256, with a key that lives only in the service's memory, over the
function, the version, its ``CodeSha256`` and the expiry. It is the only credential of the
request (no SigV4: a presigned URL carries its authorisation in its query string), so a
forged, tampered, expired URL, or one of another function or of replaced code, is refused
(403, S3's ``AccessDenied`` shape) and nothing is read.

What it serves: the zip as it was uploaded (kept next to its extracted directory as
``code-<id>.zip``; its SHA-256 is the ``CodeSha256``), or for a local-directory function a
zip of that directory built on request (at most the zipped-upload quota).

AWS reference: https://docs.aws.amazon.com/lambda/latest/api/API_FunctionCodeLocation.html
("Location: A presigned URL that you can use to download the deployment package").
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

import attrs

from lambdarun.local.function_code import uploaded_zip
from lambdarun.local.model import Function, Registry
from lambdarun.local.options import ZIP_UPLOAD_LIMIT

#: path prefix of the download URLs (outside the SigV4-signed API)
PREFIX = "/_lambdarun-code/"
#: seconds a URL stays valid (AWS: 10 minutes)
URL_TTL = 600


@attrs.frozen
class Refusal(Exception):
    """A download refused: the HTTP status and S3's error code and message."""

    status: int
    code: str
    message: str

    def body(self) -> bytes:
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code>'
                f"<Message>{self.message}</Message></Error>").encode()


class CodeLocations:
    """Signs and serves the download URLs of one service."""

    def __init__(self, registry: Registry, ttl: float = URL_TTL) -> None:
        self.registry = registry
        self.ttl = ttl
        self._key = secrets.token_bytes(32)  # this service's only: URLs die with it
        self.base_url = ""

    def _signature(self, name: str, version: str, sha: str, expires: int) -> str:
        message = f"{name}\n{version}\n{sha}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def url(self, fn: Function, *, ttl: float | None = None) -> str:
        """A presigned download URL of ``fn``'s code (a version's, or ``$LATEST``'s)."""
        expires = int(time.time() + (self.ttl if ttl is None else ttl))
        signature = self._signature(fn.name, fn.version, fn.code_sha256, expires)
        return (f"{self.base_url}{PREFIX}{quote(fn.name)}/{quote(fn.version, safe='')}"
                f"?expires={expires}&signature={signature}")

    def download(self, path: str, raw_query: str) -> bytes:
        """The zip a URL names, or :class:`Refusal`."""
        parts = path[len(PREFIX):].split("/")
        query = parse_qs(raw_query)
        if len(parts) != 2 or len(query.get("expires", [])) != 1 or len(query.get("signature", [])) != 1:
            raise Refusal(403, "AccessDenied", "Query-string authentication requires the expires and signature parameters")
        name, version = unquote(parts[0]), unquote(parts[1])
        try:
            expires = int(query["expires"][0])
        except ValueError:
            raise Refusal(403, "AccessDenied", "Invalid date (should be seconds since epoch)") from None
        try:
            fn = self.registry.lookup(name, None if version == "$LATEST" else version)
        except Exception:
            fn = None
        # the signature is checked whatever the function: an unknown one looks like a forgery
        sha = fn.code_sha256 if fn is not None and fn.version == version else ""
        expected = self._signature(name, version, sha, expires)
        if fn is None or not hmac.compare_digest(expected, query["signature"][0]):
            raise Refusal(403, "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the signature you provided.")
        if time.time() > expires:
            raise Refusal(403, "AccessDenied", "Request has expired")
        if fn.local_code:
            return _zip_directory(fn.code_dir)
        kept = uploaded_zip(fn.code_dir)
        try:
            return kept.read_bytes()
        except OSError:
            raise Refusal(404, "NoSuchKey", "The deployment package is no longer kept.") from None


def _zip_directory(directory: Path) -> bytes:
    """A zip of a local-directory function's code (bounded by the zipped-upload quota)."""
    out = io.BytesIO()
    total = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                path = Path(root, f)
                if path.is_symlink() or not path.is_file():
                    continue
                total += path.stat().st_size
                if total > ZIP_UPLOAD_LIMIT:
                    raise Refusal(413, "EntityTooLarge",
                                  f"The local directory {directory} is larger than {ZIP_UPLOAD_LIMIT} bytes.")
                zf.write(path, path.relative_to(directory).as_posix())
    return out.getvalue()
