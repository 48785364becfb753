"""A local stack as seen from outside: its endpoints, ``<state_dir>/stack.json``, the state
directory, finding a live shared stack (pid alive and its signed health check answering),
and the error raised when an attached stack went down."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import attrs

from lambdarun.errors import TargetError
from lambdarun.local import auth
from lambdarun.local.auth import CREDENTIALS_FILE, StackCredentials

STATE_FILE = "stack.json"
#: run directory of the shared stack (``lambdarun local up``) in its state directory
SHARED_DIR = "shared"
#: services a function reaches through moto's single endpoint
MOTO_SERVICES = ("s3", "dynamodb", "iam", "sts")


class LocalStackUnavailableError(TargetError):
    """The shared local stack a process attached to went down (and no new one is up, or the
    call may already have reached the old one, so it is not sent again).

    :ivar state_dir: the stack's state directory (``lambdarun local up --state-dir``).
    :ivar maybe_ran: True when the request may have reached the stack before it went down
        (an ``Invoke`` then may or may not have run).
    """

    def __init__(self, message: str, *, state_dir: str = "", maybe_ran: bool = False) -> None:
        super().__init__(message)
        self.state_dir = state_dir
        self.maybe_ran = maybe_ran

    @classmethod
    def of(cls, info: StackInfo | None, state_dir: str, doing: str, *,
           maybe_ran: bool = False) -> LocalStackUnavailableError:
        """The error for a stack (``info`` when attached, else the one in ``state_dir``) that
        went down while ``doing`` something."""
        state_dir = info.state_dir if info is not None and info.state_dir else state_dir
        where = f" (pid {info.pid}, {info.endpoints.lambda_})" if info is not None and info.pid else ""
        if maybe_ran:
            message = (f"the local stack in {state_dir}{where} went down during {doing}; it may "
                       "have run and is not sent again (at most once). ")
        else:
            message = f"the local stack in {state_dir}{where} is down ({doing} failed). "
        message += (f"Start it with `lambdarun local up --state-dir {state_dir}` (its functions, "
                    "queued events and S3/DynamoDB data are restored), then call again.")
        return cls(message, state_dir=state_dir, maybe_ran=maybe_ran)


def default_state_dir() -> Path:
    """``$XDG_CACHE_HOME/lambdarun/local`` (``~/.cache/lambdarun/local``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lambdarun" / "local"


@attrs.frozen
class Endpoints:
    """Where the local stack listens. ``moto`` serves every AWS service except Lambda."""

    lambda_: str
    moto: str

    @property
    def s3(self) -> str:
        return self.moto

    @property
    def dynamodb(self) -> str:
        return self.moto

    @property
    def iam(self) -> str:
        return self.moto

    def url(self, service: str) -> str:
        """Endpoint URL of ``service`` (``"lambda"`` or any service moto emulates)."""
        return self.lambda_ if service == "lambda" else self.moto

    def as_dict(self) -> dict[str, str]:
        return {"lambda": self.lambda_, **{s: self.moto for s in MOTO_SERVICES}}

    def environment(self) -> dict[str, str]:
        """``AWS_ENDPOINT_URL*`` variables pointing boto3 at this stack."""
        return {
            "AWS_ENDPOINT_URL_LAMBDA": self.lambda_,
            "AWS_ENDPOINT_URL_S3": self.moto,
            "AWS_ENDPOINT_URL_DYNAMODB": self.moto,
            "AWS_ENDPOINT_URL_IAM": self.moto,
            "AWS_ENDPOINT_URL_STS": self.moto,
        }

    def export_lines(self) -> list[str]:
        return [f"export {k}={v}" for k, v in self.environment().items()]


@attrs.frozen
class StackInfo:
    """The content of ``<state_dir>/stack.json`` for a running shared stack."""

    pid: int
    endpoints: Endpoints
    region: str
    state_dir: str
    started: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "lambda": self.endpoints.lambda_,
                "moto": self.endpoints.moto,
                "region": self.region,
                "state_dir": self.state_dir,
                "started": self.started,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> StackInfo:
        doc = json.loads(text)
        return cls(
            pid=int(doc["pid"]),
            endpoints=Endpoints(lambda_=doc["lambda"], moto=doc["moto"]),
            region=doc.get("region", "us-east-1"),
            state_dir=doc.get("state_dir", ""),
            started=float(doc.get("started", 0)),
        )


def pid_running(pid: int) -> bool:
    """True while ``pid`` runs (an exited process its parent has not reaped yet is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def shared_credentials(state_dir: str | os.PathLike[str] | None = None) -> StackCredentials | None:
    """The credentials of the shared stack of ``state_dir`` (None when absent/unreadable)."""
    base = Path(state_dir or default_state_dir()).expanduser()
    return StackCredentials.load(base / SHARED_DIR / CREDENTIALS_FILE)


def health(lambda_url: str, credentials: StackCredentials | None, region: str = "us-east-1",
           timeout: float = 2) -> dict[str, Any]:
    """The Lambda service's ``GET /_lambdarun/health`` (signed); raises OSError/ValueError."""
    if credentials is None:
        raise OSError("no credentials for the local stack")
    req = auth.signed_request(lambda_url + "/_lambdarun/health", credentials, region=region)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        doc = json.loads(r.read())
    if not isinstance(doc, dict):
        raise ValueError("health answer is not an object")
    return doc


def read_stack_info(state_dir: str | os.PathLike[str] | None = None, *, verify: bool = True) -> StackInfo | None:
    """The shared stack recorded in ``state_dir``, or None when none is up.

    With ``verify`` the pid must be alive and the Lambda endpoint must answer its (signed)
    health check with that pid; a stale file is ignored.
    """
    path = Path(state_dir or default_state_dir()).expanduser() / STATE_FILE
    try:
        info = StackInfo.from_json(path.read_text())
    except (OSError, ValueError, KeyError):
        return None
    if not verify:
        return info
    if not pid_running(info.pid):
        return None
    try:
        doc = health(info.endpoints.lambda_, shared_credentials(state_dir), info.region)
    except (OSError, ValueError):
        return None
    return info if doc.get("pid") == info.pid else None
