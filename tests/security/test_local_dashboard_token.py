"""The dashboard's token check takes any text a client sends: a non-ASCII token is a 403,
never a TypeError/500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lambdarun_durable.plugin
from werkzeug.test import Client

from lambdarun.dashboard.app import DashboardApp


def test_non_ascii_tokens_are_refused_not_crashed(lambdarun_session: Any, tmp_path: Path) -> None:
    session = lambdarun_session(lambdarun_durable.plugin, overrides={
        "target": "local", "dashboard": {"journal": "off"},
        "durable": {"store_url": f"sqlite:///{tmp_path}/durable.db"},
    })
    app = DashboardApp(session, token="the-token")
    app.bind(8123)
    client = Client(app)
    host = {"Host": "127.0.0.1:8123"}
    for token in ("é", "\u2603", "tok\u00e9n-the-token"):
        resp = client.get("/", query_string={"token": token}, headers=host)
        assert resp.status_code == 403, token
    write = next(f"/{p.id}{r.rule}" for p in app.pages for r in p.routes if r.write)
    for token in ("é", "ÿÿ"):  # latin-1 header text that is not ASCII
        resp = client.post(write, headers={**host, "X-Lambdarun-Token": token}, data={"x": "1"})
        assert resp.status_code == 403, token
        resp = client.post(write, headers=host, data={"token": "\u2603"})
        assert resp.status_code == 403
    # a non-ASCII token cookie is no token (pages that only read still answer)
    client.set_cookie("lambdarun_token", "\u00e9", domain="127.0.0.1")
    assert client.get("/", headers=host, follow_redirects=True).status_code == 200
    assert client.post(write, headers=host, data={"x": "1"}).status_code == 403
