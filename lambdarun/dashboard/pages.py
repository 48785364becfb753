"""What a dashboard page is: routes, templates, and the context its views receive."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.errors import PluginError

if TYPE_CHECKING:
    import jinja2
    from werkzeug.wrappers import Request

    from lambdarun.dashboard.lambda_api import LambdaApi
    from lambdarun.dashboard.journal import Journal
    from lambdarun.session import Session

__all__ = ["Route", "Page", "DashboardRegistry", "ViewContext", "View"]

#: ``view(ctx, request, **url_values)`` returns a werkzeug Response, an HTML string, or a
#: JSON-able dict/list (sent as ``application/json``)
View = Callable[..., Any]


@attrs.frozen
class Route:
    """One URL of a page.

    :param rule: a werkzeug rule relative to the page, e.g. ``"/"`` or ``"/<path:arn>"``.
    :param view: ``view(ctx, request, **url_values)``.
    :param endpoint: name used by :meth:`ViewContext.url` (default: the view's name).
    :param write: a write action: POST only, refused without the dashboard token.
    """

    rule: str
    view: View
    endpoint: str | None = None
    write: bool = False

    @property
    def name(self) -> str:
        return self.endpoint or getattr(self.view, "__name__", "view")


@attrs.frozen
class Page:
    """A section of the dashboard, listed in the navigation bar.

    :param id: URL prefix (``/<id>/``) and template namespace (``<id>/<name>``).
    :param title: shown in the navigation.
    :param routes: its URLs; the first is the page's entry point.
    :param templates: Jinja2 sources by name (``{"list.html": "{% extends 'base.html' %}..."}``),
        rendered as ``"<id>/<name>"``.
    :param order: position in the navigation (lower first).
    :param available: ``available(ctx)`` returns None when the page can show something, or a
        sentence saying why not (shown instead of its content).
    """

    id: str
    title: str
    routes: tuple[Route, ...]
    templates: Mapping[str, str] = attrs.field(factory=dict)
    order: int = 100
    available: Callable[[ViewContext], str | None] | None = None


class DashboardRegistry:
    """Filled through the ``lambdarun_dashboard_pages`` hook."""

    def __init__(self) -> None:
        self._pages: dict[str, Page] = {}

    def add_page(self, page: Page) -> None:
        if not page.id or not page.id.replace("-", "").replace("_", "").isalnum():
            raise PluginError(f"dashboard page id {page.id!r} must be letters, digits, '-' or '_'")
        if page.id in self._pages or page.id.startswith("_"):
            raise PluginError(
                f"two plugins add the dashboard page {page.id!r}; block one with LAMBDARUN_BLOCK_PLUGINS"
            )
        if not page.routes:
            raise PluginError(f"dashboard page {page.id!r} has no routes")
        self._pages[page.id] = page

    def pages(self) -> list[Page]:
        return sorted(self._pages.values(), key=lambda p: (p.order, p.id))

    def get(self, page_id: str) -> Page | None:
        return self._pages.get(page_id)


class ViewContext:
    """What a view needs: the session, data sources, rendering and URLs."""

    def __init__(
        self,
        *,
        app: Any,
        page: Page,
        request: Request,
    ) -> None:
        self.app = app
        self.page = page
        self.request = request

    @property
    def session(self) -> Session:
        return self.app.session

    @property
    def lambda_api(self) -> LambdaApi | None:
        """The local Lambda service's read API (None when the target is not local)."""
        return self.app.lambda_api

    @property
    def journal(self) -> Journal:
        return self.app.journal

    @property
    def token_cookie_ok(self) -> bool:
        """True when the browser holds the dashboard token (its forms can carry it)."""
        return self.app.cookie_has_token(self.request)

    def url(self, endpoint: str, page: str | None = None, **values: Any) -> str:
        """URL of ``endpoint`` of ``page`` (default: this page); extra values become the query."""
        return self.app.url_for(page or self.page.id, endpoint, **values)

    def render(self, template: str, **variables: Any) -> str:
        """Render ``template`` (this page's ``<name>`` or a full ``<id>/<name>``).

        With ``?_fragment=live`` in the request only the template's ``live`` block is
        rendered: the part the browser refreshes in place.
        """
        name = template if "/" in template or template.endswith("base.html") else f"{self.page.id}/{template}"
        env: jinja2.Environment = self.app.jinja
        tmpl = env.get_template(name)
        variables = {**self.app.template_globals(self), **variables}
        fragment = self.request.args.get("_fragment")
        if fragment:
            block = tmpl.blocks.get(fragment)
            if block is None:
                from werkzeug.exceptions import NotFound

                raise NotFound(f"no fragment {fragment!r} in {name}")
            return "".join(block(tmpl.new_context(variables)))
        return tmpl.render(variables)


# -- template helpers shared by every page --------------------------------------------------


def fmt_time(value: Any) -> str:
    """Local wall-clock time of an epoch (s or ms), ISO string or datetime."""
    if value in (None, ""):
        return ""
    if isinstance(value, datetime.datetime):
        dt = value
    elif isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        dt = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    else:
        try:
            dt = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_ms(value: Any) -> str:
    if value in (None, ""):
        return ""
    ms = float(value)
    if ms < 1000:
        return f"{ms:.1f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms / 60000:.1f} min"


def fmt_bytes(value: Any) -> str:
    if value in (None, ""):
        return ""
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(value)  # pragma: no cover


def pretty_json(value: Any) -> str:
    """Indented JSON of a value, or of a string that holds JSON; other text as is."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


FILTERS: dict[str, Callable[..., Any]] = {
    "time": fmt_time,
    "ms": fmt_ms,
    "bytes": fmt_bytes,
    "pretty_json": pretty_json,
}
