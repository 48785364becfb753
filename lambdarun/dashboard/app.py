"""The dashboard's WSGI application: routing, the Host check, the token, rendering."""

from __future__ import annotations

import hmac
import json
import secrets
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import structlog
from werkzeug.exceptions import Forbidden, HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect, safe_join
from werkzeug.wrappers import Request, Response

from lambdarun.dashboard.lambda_api import LambdaApi
from lambdarun.dashboard.pages import FILTERS, DashboardRegistry, Page, ViewContext
from lambdarun.errors import LambdarunError
from lambdarun.dashboard.journal import Journal

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = ["DashboardApp", "TOKEN_COOKIE", "TOKEN_FIELD", "collect_pages"]

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
TOKEN_COOKIE = "lambdarun_dashboard_token"
#: the form field (or ``X-Lambdarun-Token`` header) a write action must carry
TOKEN_FIELD = "token"
_SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes form posts say Origin: null
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
}


def collect_pages(pm: Any) -> DashboardRegistry:
    """Ask every plugin for its pages."""
    registry = DashboardRegistry()
    pm.hook.lambdarun_dashboard_pages(register=registry)
    return registry


class DashboardApp:
    """WSGI app serving the pages of ``registry`` for ``session``.

    :param session: the lambdarun session whose settings and target the pages read.
    :param registry: the pages (default: collected from the session's plugins).
    :param lambda_url: the local Lambda service (default: the session's local target, when
        its target is ``local``).
    :param token: the secret guarding write actions (default: a new random one).
    :param refresh: seconds between live refreshes in the browser.
    """

    def __init__(
        self,
        session: Session,
        *,
        registry: DashboardRegistry | None = None,
        lambda_url: str | None = None,
        token: str | None = None,
        refresh: float = 2.0,
        lambda_credentials: Any = None,
    ) -> None:
        self.session = session
        self.registry = registry if registry is not None else collect_pages(session.pm)
        self.token = token or secrets.token_urlsafe(24)
        self.refresh = refresh
        self._lambda_url = lambda_url
        self._lambda_credentials = lambda_credentials
        self._lambda_api: LambdaApi | None = None
        self.journal = Journal.for_session(session)
        self.allowed_hosts: frozenset[str] = frozenset()
        self.pages = self.registry.pages()
        templates = {f"{p.id}/{name}": text for p in self.pages for name, text in p.templates.items()}
        self.jinja = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [jinja2.FileSystemLoader(str(HERE / "templates")), jinja2.DictLoader(templates)]
            ),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.jinja.filters.update(FILTERS)
        # the shared macros (status badges, progress bars) as a global, so that a page's
        # "live" block rendered on its own sees them too
        self.jinja.globals["m"] = self.jinja.get_template("_macros.html").module
        rules = [
            Rule("/", endpoint="_home"),
            Rule("/_static/<path:name>", endpoint="_static"),
            Rule("/_health", endpoint="_health"),
        ]
        self._routes: dict[str, tuple[Page, Any]] = {}
        for page in self.pages:
            for route in page.routes:
                endpoint = f"{page.id}:{route.name}"
                methods = ["POST"] if route.write else ["GET"]
                rules.append(Rule(f"/{page.id}{route.rule}", endpoint=endpoint, methods=methods))
                self._routes[endpoint] = (page, route)
        self.url_map = Map(rules, strict_slashes=True)
        self._builder = self.url_map.bind("127.0.0.1")

    # -- configuration --------------------------------------------------------------------

    def bind(self, port: int) -> None:
        """Accept only requests addressed to 127.0.0.1:port or localhost:port."""
        self.allowed_hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})

    @property
    def lambda_api(self) -> LambdaApi | None:
        if self._lambda_api is None:
            url = self._lambda_url
            credentials = self._lambda_credentials
            region = self.session.settings.region
            if url is None and self.session.settings.target == "local":
                url = self.session.target.endpoint_url("lambda")
                stack = getattr(self.session.target, "stack", None)
                credentials = getattr(stack, "credentials", None)
                region = getattr(stack, "region", region)
            if url:
                self._lambda_api = LambdaApi(url, credentials=credentials, region=region)
        return self._lambda_api

    # -- helpers for views and templates -------------------------------------------------

    def url_for(self, page_id: str, endpoint: str, **values: Any) -> str:
        from werkzeug.routing import BuildError

        clean = {k: v for k, v in values.items() if v is not None and v != ""}
        try:
            return self._builder.build(f"{page_id}:{endpoint}", clean)
        except BuildError:  # a page that is not installed, or a value missing
            return "#"

    def cookie_has_token(self, request: Request) -> bool:
        return _same_token(request.cookies.get(TOKEN_COOKIE, ""), self.token)

    def template_globals(self, ctx: ViewContext) -> dict[str, Any]:
        has_token = self.cookie_has_token(ctx.request)
        return {
            "pages": self.pages,
            "page": ctx.page,
            "request": ctx.request,
            "url": ctx.url,
            "refresh_ms": int(self.refresh * 1000),
            "has_token": has_token,
            "form_token": self.token if has_token else "",
            "target": self.session.settings.target,
        }

    # -- WSGI ---------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except HTTPException as exc:
            response = self._error_page(request, exc.code or 500, exc.description or exc.name)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        host = request.environ.get("HTTP_HOST", "")  # no fallback to the server's own name
        if host not in self.allowed_hosts:
            # DNS rebinding and requests from other machines: only our own address answers
            log.warning("dashboard refused a request for another host", host=host)
            return Response(
                f"refused: Host {host!r} is not this dashboard "
                f"(use http://{sorted(self.allowed_hosts)[0] if self.allowed_hosts else '127.0.0.1'})\n",
                status=403,
                mimetype="text/plain",
            )
        given = request.args.get(TOKEN_FIELD)
        if given is not None and request.method == "GET":
            return self._accept_token(request, given)
        adapter = self.url_map.bind_to_environ(request.environ)
        endpoint, values = adapter.match()
        if endpoint == "_home":
            first = self.pages[0] if self.pages else None
            if first is None:
                raise NotFound("no dashboard pages are installed")
            return redirect(f"/{first.id}{first.routes[0].rule}")
        if endpoint == "_static":
            return self._static(values["name"])
        if endpoint == "_health":
            import os

            return Response(json.dumps({"pid": os.getpid(), "pages": [p.id for p in self.pages]}),
                            mimetype="application/json")
        page, route = self._routes[endpoint]
        if route.write:
            self._check_write(request)
        ctx = ViewContext(app=self, page=page, request=request)
        try:
            if page.available is not None:
                reason = page.available(ctx)
                if reason:
                    return Response(ctx.render("unavailable.html", reason=reason), mimetype="text/html")
            result = route.view(ctx, request, **values)
        except HTTPException:
            raise
        except LambdarunError as exc:
            log.warning("dashboard view failed", page=page.id, error=str(exc))
            return self._error_page(request, 502, f"{type(exc).__name__}: {exc}", page=page)
        except Exception as exc:  # a broken page must not take the dashboard down
            log.exception("dashboard view crashed", page=page.id)
            return self._error_page(request, 500, f"the {page.id} page failed: {type(exc).__name__}: {exc}", page=page)
        return self._response(result)

    @staticmethod
    def _response(result: Any) -> Response:
        if isinstance(result, Response):
            return result
        if isinstance(result, str):
            return Response(result, mimetype="text/html")
        return Response(json.dumps(result, default=str), mimetype="application/json")

    def _check_write(self, request: Request) -> None:
        """A write action needs the token, and no cross-site origin."""
        origin = request.headers.get("Origin")
        if origin is not None:
            parsed = urllib.parse.urlsplit(origin)
            if parsed.scheme != "http" or parsed.netloc not in self.allowed_hosts:
                raise Forbidden(f"refused: a write action from another origin ({origin})")
        if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin", "none"):
            raise Forbidden("refused: a write action from another site")
        given = request.form.get(TOKEN_FIELD) or request.headers.get("X-Lambdarun-Token") or ""
        if not given or not _same_token(given, self.token):
            raise Forbidden(
                "refused: this action needs the dashboard token printed when the dashboard started "
                "(open the printed URL with ?token=..., or paste the token into the form)"
            )

    def _accept_token(self, request: Request, given: str) -> Response:
        """``?token=...``: remember it in a cookie and drop it from the address bar."""
        args = [(k, v) for k, v in request.args.items(multi=True) if k != TOKEN_FIELD]
        target = request.path + ("?" + urllib.parse.urlencode(args) if args else "")
        response = redirect(target, code=303)
        if _same_token(given, self.token):
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        else:
            response = self._error_page(request, 403, "refused: wrong dashboard token")
        return response

    def _static(self, name: str) -> Response:
        path = safe_join(str(HERE / "static"), name)
        if path is None or not Path(path).is_file():
            raise NotFound()
        mimetype = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}.get(
            name.rsplit(".", 1)[-1], "application/octet-stream"
        )
        response = Response(Path(path).read_bytes(), mimetype=mimetype)
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _error_page(self, request: Request, status: int, message: str, *, page: Page | None = None) -> Response:
        try:
            html = self.jinja.get_template("error.html").render(
                pages=self.pages, page=page, request=request, status=status, message=message,
                refresh_ms=0, has_token=False, form_token="", target=self.session.settings.target,
                url=lambda *a, **k: "#",
            )
        except Exception:  # never fail while reporting a failure
            log.exception("dashboard error page failed")
            html = f"{status}: {message}"
        return Response(html, status=status, mimetype="text/html")


def _same_token(given: str, token: str) -> bool:
    """Constant-time comparison that also takes any text a client sends (``compare_digest``
    raises TypeError on non-ASCII str: that must be a 403, never a 500)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))
