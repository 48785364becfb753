"""The dashboard's built-in plugin: the ``[dashboard]`` section, the core pages and ``lambdarun ui``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.config import one_of, positive
from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.backends import Backend
    from lambdarun.config import ConfigRegistry
    from lambdarun.futures import LambdaFuture
    from lambdarun.session import Session
    from lambdarun.dashboard.pages import DashboardRegistry

__all__ = ["DashboardConfig"]


@attrs.define(kw_only=True)
class DashboardConfig:
    """``[dashboard]``: the local dashboard and the run journal it shows."""

    #: port of the dashboard on 127.0.0.1 (0: any free port)
    port: int = 0
    #: record run/submit/map calls: "auto" (on for a target with a local state dir: local), "on" or "off"
    journal: str = attrs.field(default="auto", validator=one_of("auto", "on", "off"))
    #: the journal's SQLite file; default: journal.db in the target's state dir ([local] state_dir)
    journal_path: str | None = None
    #: runs kept in the journal (older ones are dropped)
    journal_keep: int = attrs.field(default=500, validator=positive)
    #: seconds between live refreshes of a page
    refresh: float = attrs.field(default=2.0, validator=positive)
    #: `lambdarun ui` opens a browser when a display is available
    open_browser: bool = True


@hookimpl
def lambdarun_register_config(register: ConfigRegistry) -> None:
    register.add_section("dashboard", DashboardConfig)


@hookimpl
def lambdarun_tasks_submitted(
    session: Session, backend: Backend, func: Callable[..., Any], futures: Sequence[LambdaFuture], kind: str
) -> None:
    """Record the call in the run journal (when it is on for ``session``)."""
    from lambdarun.dashboard.journal import record_batch

    record_batch(session, backend.id, func, futures, kind=kind)


@hookimpl
def lambdarun_dashboard_pages(register: DashboardRegistry) -> None:
    from lambdarun.dashboard.core_pages import functions_page, invocations_page, runs_page

    register.add_page(functions_page())
    register.add_page(invocations_page())
    register.add_page(runs_page())


@hookimpl
def lambdarun_add_commands(cli: Any) -> None:
    from lambdarun.dashboard.cli import ui

    cli.add_command(ui)
