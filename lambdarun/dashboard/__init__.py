"""The local dashboard: functions, invocations, runs, and the pages plugins add.

Public surface::

    from lambdarun.dashboard import ui
    server = ui()                  # serve it from this process (embedded local stack); prints the URL
    server.url_with_token          # http://127.0.0.1:PORT/?token=...
    server.stop()

``lambdarun ui`` does the same from the shell, or opens the dashboard of a running
``lambdarun local up``. Plugins add pages through the ``lambdarun_dashboard_pages`` hook
(:class:`Page`, :class:`Route`, :class:`ViewContext`).

The server listens on 127.0.0.1 only, answers only requests whose Host is
``127.0.0.1:PORT`` or ``localhost:PORT``, and changes nothing except through routes marked
``write=True``, which need the token printed at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lambdarun.dashboard.app import DashboardApp, collect_pages
    from lambdarun.dashboard.lambda_api import LambdaApi, LambdaApiError
    from lambdarun.dashboard.pages import DashboardRegistry, Page, Route, ViewContext
    from lambdarun.dashboard.server import (
        DashboardError,
        DashboardServer,
        read_dashboard_info,
        serve,
        start_for_stack,
    )
    from lambdarun.session import Session

# Names resolve lazily: the dashboard's built-in plugin (``lambdarun.dashboard.plugin``) is
# imported everywhere lambdarun runs, inside Lambda too, where werkzeug and Jinja2 (the
# ``local`` extra) are not installed.
_LAZY = {
    "DashboardApp": "app",
    "collect_pages": "app",
    "LambdaApi": "lambda_api",
    "LambdaApiError": "lambda_api",
    "DashboardRegistry": "pages",
    "Page": "pages",
    "Route": "pages",
    "ViewContext": "pages",
    "DashboardError": "server",
    "DashboardServer": "server",
    "read_dashboard_info": "server",
    "serve": "server",
    "start_for_stack": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lambdarun.dashboard' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lambdarun.dashboard.{module}"), name)

__all__ = [
    "DashboardApp",
    "DashboardError",
    "DashboardRegistry",
    "DashboardServer",
    "LambdaApi",
    "LambdaApiError",
    "Page",
    "Route",
    "ViewContext",
    "collect_pages",
    "read_dashboard_info",
    "serve",
    "start_for_stack",
    "ui",
]


def ui(session: Session | None = None, *, port: int | None = None, open_browser: bool | None = None) -> DashboardServer:
    """Serve the dashboard from this process for ``session`` (default: the process-wide one).

    On the local target this is the dashboard of the embedded stack this process uses. The
    URL (with the token) is printed and, when a display is available, opened. The server
    runs in background threads until :meth:`DashboardServer.stop` or the process exits.
    """
    from lambdarun.dashboard.cli import open_in_browser
    from lambdarun.dashboard.server import serve

    if session is None:
        from lambdarun.session import get_session

        session = get_session()
    server = serve(session, port=port)
    print(f"lambdarun dashboard: {server.url_with_token}", flush=True)
    section: Any = (getattr(session.settings, "sections", {}) or {}).get("dashboard")
    show = open_browser if open_browser is not None else bool(getattr(section, "open_browser", True))
    if show:
        open_in_browser(server.url_with_token)
    return server
