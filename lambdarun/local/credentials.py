"""The stack's own credentials (:class:`StackCredentials`: generated at each start, 0600 on
disk, every function's runtime credentials) and signing plain-HTTP calls with them."""

from __future__ import annotations

import json
import os
import secrets
import string
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import attrs

from lambdarun.private_files import write_private

#: file in a stack's run directory holding its credentials (0600)
CREDENTIALS_FILE = "credentials.json"


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
