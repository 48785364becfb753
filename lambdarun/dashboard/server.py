"""Serving the dashboard on 127.0.0.1 in a background thread, and finding a running one."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from lambdarun.dashboard.app import DashboardApp
from lambdarun.errors import LambdarunError

if TYPE_CHECKING:
    from lambdarun.local.stack import LocalStack
    from lambdarun.session import Session

__all__ = [
    "DashboardError",
    "DashboardServer",
    "DashboardInfo",
    "serve",
    "start_for_stack",
    "read_dashboard_info",
    "DASHBOARD_FILE",
    "dashboard_session",
]

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
DASHBOARD_FILE = "dashboard.json"


class DashboardError(LambdarunError):
    """The dashboard could not start."""


def _quiet_handler() -> type:
    from werkzeug.serving import WSGIRequestHandler

    from lambdarun.local.stack import NoDelayQuietHandler

    return type("DashboardRequestHandler", (NoDelayQuietHandler, WSGIRequestHandler), {})


class DashboardServer:
    """The dashboard app on ``127.0.0.1:port`` (never another interface).

    :param app: the WSGI app.
    :param port: TCP port (0: any free port).
    :param runtime_file: where to record url, pid and token (mode 0600) so that
        ``lambdarun ui`` finds this dashboard; removed on :meth:`stop`.
    :param close_session: close the app's session on :meth:`stop` (it was made for us).
    """

    def __init__(
        self, app: DashboardApp, *, port: int = 0, runtime_file: Path | None = None, close_session: bool = False
    ) -> None:
        self.app = app
        self.requested_port = port
        self.runtime_file = runtime_file
        self.close_session = close_session
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> DashboardServer:
        from werkzeug.serving import make_server

        if self._server is not None:
            return self
        try:
            server = make_server(HOST, self.requested_port, self.app, threaded=True, request_handler=_quiet_handler())
        except (OSError, SystemExit) as exc:
            raise DashboardError(
                f"cannot serve the dashboard on {HOST}:{self.requested_port}: {exc}; pick another "
                "port ([dashboard] port, --port) or 0 for any free one"
            ) from None
        server.daemon_threads = True
        self._server = server
        self.app.bind(self.port)
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="lambdarun-dashboard", daemon=True
        )
        self._thread.start()
        if self.runtime_file is not None:
            self._write_runtime_file()
        log.debug("dashboard started", url=self.url)
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise DashboardError("the dashboard is not running: call start() first")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def token(self) -> str:
        return self.app.token

    @property
    def url_with_token(self) -> str:
        """The URL to open: it hands the browser the token for the write action."""
        return f"{self.url}?token={self.token}"

    def _write_runtime_file(self) -> None:
        assert self.runtime_file is not None
        info = DashboardInfo(pid=os.getpid(), url=self.url, token=self.token)
        self.runtime_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.runtime_file.with_name(f".{self.runtime_file.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(attrs.asdict(info)))
        os.replace(tmp, self.runtime_file)

    def stop(self) -> None:
        if self._server is None:
            return
        url = self.url
        server, self._server = self._server, None
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.app.journal.close()
        if self.runtime_file is not None:
            info = read_dashboard_info(self.runtime_file.parent, verify=False)
            if info is not None and info.pid == os.getpid() and info.url == url:
                self.runtime_file.unlink(missing_ok=True)
        if self.close_session:
            self.app.session.close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@attrs.frozen
class DashboardInfo:
    """``<state_dir>/dashboard.json``: the dashboard of a shared local stack."""

    pid: int
    url: str
    token: str

    @property
    def url_with_token(self) -> str:
        return f"{self.url}?token={self.token}"


def read_dashboard_info(state_dir: str | os.PathLike[str], *, verify: bool = True) -> DashboardInfo | None:
    """The dashboard recorded in ``state_dir``; with ``verify`` only if it answers with its pid."""
    path = Path(state_dir).expanduser() / DASHBOARD_FILE
    try:
        doc = json.loads(path.read_text())
        info = DashboardInfo(pid=int(doc["pid"]), url=str(doc["url"]), token=str(doc["token"]))
    except (OSError, ValueError, KeyError):
        return None
    if not verify:
        return info
    try:
        with urllib.request.urlopen(info.url + "_health", timeout=2) as response:
            if json.loads(response.read()).get("pid") != info.pid:
                return None
    except (OSError, ValueError):
        return None
    return info


def dashboard_session(overrides: dict[str, Any] | None = None) -> Session:
    """A session like the user's (config files, environment, entry points)."""
    from lambdarun.session import Session

    return Session(overrides=overrides or None)


def _dashboard_settings(session: Session) -> Any:
    return (getattr(session.settings, "sections", {}) or {}).get("dashboard")


def serve(
    session: Session,
    *,
    port: int | None = None,
    lambda_url: str | None = None,
    token: str | None = None,
    runtime_file: Path | None = None,
    close_session: bool = False,
    lambda_credentials: Any = None,
) -> DashboardServer:
    """Start a dashboard for ``session`` in a background thread of this process.

    ``port`` defaults to ``[dashboard] port`` (0: any free port); ``lambda_url`` to the
    session's local target; ``lambda_credentials`` (a
    :class:`~lambdarun.local.auth.StackCredentials`) sign its requests to ``lambda_url``.
    """
    section = _dashboard_settings(session)
    if port is None:
        port = int(getattr(section, "port", 0) or 0)
    refresh = float(getattr(section, "refresh", 2.0) or 2.0)
    app = DashboardApp(session, lambda_url=lambda_url, token=token, refresh=refresh,
                       lambda_credentials=lambda_credentials)
    return DashboardServer(app, port=port, runtime_file=runtime_file, close_session=close_session).start()


def start_for_stack(stack: LocalStack, *, session: Session | None = None, port: int | None = None) -> DashboardServer:
    """The dashboard of a shared stack (``lambdarun local up``); recorded in its state dir.

    The dashboard's session reads the same ``[local] state_dir`` (journal) and
    ``[durable]`` store as the processes using the stack.
    """
    owned = session is None
    if session is None:
        session = dashboard_session({"target": "local", "local": {"state_dir": str(stack.state_dir)}})
    try:
        return serve(
            session,
            port=port,
            lambda_url=stack.endpoints.lambda_,
            lambda_credentials=stack.credentials,
            runtime_file=stack.state_dir / DASHBOARD_FILE,
            close_session=owned,
        )
    except BaseException:
        if owned:
            session.close()
        raise
