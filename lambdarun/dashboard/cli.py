"""``lambdarun ui``: open the dashboard of the shared local stack, or serve one."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from lambdarun.errors import LambdarunError

__all__ = ["ui", "open_in_browser"]


def open_in_browser(url: str) -> bool:
    """Open ``url`` in a graphical browser when there is a display (never a terminal one)."""
    graphical = sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if not graphical:
        return False
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


@click.command()
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 [default: [dashboard] port, 0 = any free].")
@click.option("--no-browser", is_flag=True, help="Print the URL only.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The local stack's state dir [default: [local] state_dir].",
)
def ui(port: int | None, no_browser: bool, state_dir: Path | None) -> None:
    """Open the dashboard: functions, invocations, runs, durable executions, Temporal workers.

    With `lambdarun local up` running, its dashboard is opened. Otherwise one is served
    from this process (attached to the shared stack, or with an embedded one) until Ctrl-C.
    Write actions need the token in the printed URL.
    """
    from lambdarun.dashboard.server import dashboard_session, read_dashboard_info, serve

    overrides: dict[str, Any] = {"local": {"state_dir": str(state_dir)}} if state_dir else {}
    try:
        session = dashboard_session(overrides)
    except LambdarunError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    try:
        section = (getattr(session.settings, "sections", {}) or {}).get("dashboard")
        show = bool(getattr(section, "open_browser", True)) and not no_browser
        if session.settings.target == "local":
            running = read_dashboard_info(session.settings.section("local").state_dir)
            if running is not None:
                click.echo(f"lambdarun dashboard (of `lambdarun local up`, pid {running.pid}): {running.url_with_token}")
                if show:
                    open_in_browser(running.url_with_token)
                return
        try:
            server = serve(session, port=port)
        except LambdarunError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        click.echo(f"lambdarun dashboard: {server.url_with_token}")
        click.echo("(the token in the URL allows completing durable callbacks; Ctrl-C stops)")
        sys.stdout.flush()
        if show:
            open_in_browser(server.url_with_token)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
    finally:
        session.close()
