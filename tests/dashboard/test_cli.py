"""``lambdarun local up``'s dashboard (``start_for_stack``), ``lambdarun ui`` and the page registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lambdarun.dashboard import DashboardRegistry, Page, Route, read_dashboard_info, start_for_stack
from lambdarun.dashboard.cli import ui
from lambdarun.errors import PluginError

pytestmark = pytest.mark.timeout(60)


def test_shared_stack_dashboard_is_found_by_ui(local_stack: Any) -> None:
    server = start_for_stack(local_stack)  # what `lambdarun local up` calls
    try:
        info = read_dashboard_info(local_stack.state_dir)
        assert info is not None and info.url == server.url and info.token == server.token
        assert (Path(local_stack.state_dir) / "dashboard.json").stat().st_mode & 0o777 == 0o600
        with urllib.request.urlopen(server.url + "runs/") as response:
            assert response.status == 200
        result = CliRunner().invoke(ui, ["--no-browser", "--state-dir", str(local_stack.state_dir)])
        assert result.exit_code == 0, result.output
        assert server.url_with_token in result.output
    finally:
        server.stop()
    assert read_dashboard_info(local_stack.state_dir, verify=False) is None


def test_ui_serves_a_dashboard_until_interrupted(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDARUN_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lambdarun.dashboard.cli import ui; ui()", "--no-browser",
         "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("lambdarun dashboard: http://127.0.0.1:"), line + (proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(": ", 1)[1].strip()
        base = url.split("?", 1)[0]
        with urllib.request.urlopen(base + "runs/") as response:
            html = response.read().decode()
        for title in ("Functions", "Invocations", "Runs", "Durable", "Temporal"):
            assert f">{title}</a>" in html
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_registry_refuses_duplicate_and_bad_pages() -> None:
    registry = DashboardRegistry()
    page = Page(id="mine", title="Mine", routes=(Route("/", lambda ctx, request: "hi"),))
    registry.add_page(page)
    with pytest.raises(PluginError, match="two plugins add the dashboard page 'mine'"):
        registry.add_page(page)
    with pytest.raises(PluginError, match="letters, digits"):
        registry.add_page(Page(id="a/b", title="x", routes=page.routes))
    with pytest.raises(PluginError, match="no routes"):
        registry.add_page(Page(id="empty", title="x", routes=()))


def test_plugins_add_their_pages_through_the_hook(lambdarun_plugin_manager: Any, dashboard_plugins: list[Any]) -> None:
    import lambdarun_temporal.plugin

    pm = lambdarun_plugin_manager(*dashboard_plugins, lambdarun_temporal.plugin)
    registry = DashboardRegistry()
    pm.hook.lambdarun_dashboard_pages(register=registry)
    assert [p.id for p in registry.pages()] == ["functions", "invocations", "runs", "durable", "temporal"]
    # the only write actions: the durable page's (each POST-only, behind the token)
    assert [r.rule for r in registry.get("durable").routes if r.write] == ["/callback", "/stop", "/pause", "/resume"]
    assert not any(r.write for p in registry.pages() if p.id != "durable" for r in p.routes)


def test_temporal_worker_records_read_from_the_local_api_shape() -> None:
    from lambdarun_temporal.dashboard import worker_invocation

    base = {"seq": 7, "request_id": "r-1", "function": "w", "type": "Event", "started_at": 1.0,
            "duration_ms": 1500.0, "billed_ms": 1500, "init_duration_ms": 250.0, "attempts": 1, "log": ""}
    summary = '{"lambdarun_temporal": 1, "task_queue": "orders", "stop_reason": "deadline", ' \
              '"workflow_activations": 4, "activities": 2, "seconds": 1.2}'
    ok = worker_invocation({**base, "status": "succeeded", "error": None, "response_preview": summary},
                           configured_queue="lambdarun")
    assert (ok.task_queue, ok.task_queue_from, ok.exit_reason, ok.tasks) == ("orders", "worker", "deadline", 6)
    older = worker_invocation({**base, "status": "succeeded", "error": None,
                               "response_preview": '{"lambdarun_temporal": 1, "stop_reason": "idle", "activities": 0}'},
                              configured_queue="lambdarun")
    assert (older.task_queue, older.task_queue_from, older.exit_reason) == ("lambdarun", "config", "idle")
    failed = worker_invocation(
        {**base, "status": "failed", "response_preview": '{"errorType": "TemporalConnectError"}',
         "error": {"errorType": "TemporalConnectError", "errorMessage": "no server at 127.0.0.1:1", "stackTrace": []}},
        configured_queue="lambdarun",
    )
    assert failed.exit_reason == "failed: TemporalConnectError: no server at 127.0.0.1:1"
    assert failed.tasks is None and failed.summary is None
    running = worker_invocation({**base, "status": "running", "error": None, "response_preview": None},
                                configured_queue="lambdarun")
    assert running.exit_reason == "running"
