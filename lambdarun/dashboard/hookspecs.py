"""The dashboard's hook: plugins add pages to ``lambdarun ui``.

This spec belongs in :mod:`lambdarun.hookspecs` (same text); until it is there,
:func:`ensure_hookspec` adds it to a plugin manager that lacks it, and implementations are
marked ``optionalhook=True`` so plugin managers without the dashboard still validate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambdarun.hookspecs import hookspec

if TYPE_CHECKING:
    from lambdarun.dashboard.pages import DashboardRegistry

__all__ = ["lambdarun_dashboard_pages", "ensure_hookspec"]


@hookspec
def lambdarun_dashboard_pages(register: DashboardRegistry) -> None:
    """Add pages to the local dashboard (``lambdarun ui``, ``lambdarun local up``).

    Call ``register.add_page(page)`` with a :class:`lambdarun.dashboard.Page`: an id (its
    URL prefix ``/<id>/``), a title for the navigation, its routes (views receiving a
    :class:`lambdarun.dashboard.ViewContext` with the session, the Lambda API, the run
    journal and template rendering) and its templates (Jinja2 source text extending
    ``base.html``). A route marked ``write=True`` is only reachable by POST with the
    dashboard token; every other route must not change anything. Import heavy modules
    inside the views, not at plugin import time.

    :param register: the :class:`lambdarun.dashboard.DashboardRegistry` being filled.
    :return: nothing; results are ignored.

    .. versionadded:: 0.1
    """


def ensure_hookspec(pm: Any) -> None:
    """Add :func:`lambdarun_dashboard_pages` to ``pm`` unless the core already declares it."""
    caller = getattr(pm.hook, "lambdarun_dashboard_pages", None)
    if caller is None or not caller.has_spec():
        import sys

        pm.add_hookspecs(sys.modules[__name__])
