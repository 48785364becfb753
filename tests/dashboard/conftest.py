"""Fixtures for the dashboard's browser tests: the real local stack, a lambdarun session with
the covalent and durable backends, the dashboard served from this process, and headless
Chromium (Debian's ``chromium`` package) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun_covalent.plugin
import lambdarun_durable.plugin
from lambdarun.dashboard import DashboardServer, serve
from lambdarun.local.testing import local_stack_fixture
from lambdarun_temporal.testing import temporal_dev_server  # noqa: F401 - a fixture

#: the real local target for this folder's tests
local_stack = local_stack_fixture(scope="session", async_retry_delay=0.1)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
#: Debian's chromium package (apt-get install -y chromium); never a browser Playwright downloads
CHROMIUM = os.environ.get("_LAMBDARUN_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # a name that resolves to this machine, as a DNS-rebinding page would
    "--host-resolver-rules=MAP rebound.test 127.0.0.1",
]
COVALENT_FUNCTION = "lambdarun-dashboard-tests"
DURABLE_FUNCTION = "lambdarun-dashboard-durable-tests"


def dashboard_plugins() -> list[Any]:
    """The backend plugins the dashboard tests use (the dashboard itself is built in)."""
    return [lambdarun_covalent.plugin, lambdarun_durable.plugin]


@pytest.fixture(name="dashboard_plugins")
def dashboard_plugins_fixture() -> list[Any]:
    return dashboard_plugins()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-state")


@pytest.fixture
def make_session(lambdarun_session: Callable[..., Any], local_stack: Any, state: Path) -> Callable[..., Any]:
    """A session on the local stack like a user's: journal on, durable store in ``state``."""

    def factory(*extra: Any, **overrides: Any) -> Any:
        return lambdarun_session(
            *dashboard_plugins(),
            *extra,
            overrides={
                "target": "local",
                "progress": False,
                "local": {"state_dir": str(local_stack.state_dir)},
                "dashboard": {"journal_path": str(state / "journal.db"), "refresh": 0.5},
                "covalent": {"function_name": COVALENT_FUNCTION},
                # durable.api = auto: executions on the local service's durable-execution API, which
                # the dashboard reads and acts through (the store stays unused)
                "durable": {"store_url": f"sqlite:///{state}/durable.db", "function_name": DURABLE_FUNCTION},
                **overrides,
            },
        )

    return factory


@pytest.fixture
def dashboard(make_session: Callable[..., Any]) -> Iterator[DashboardServer]:
    """The dashboard served from this process for a session like the user's."""
    server = serve(make_session())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one test module. Module scope on purpose: Playwright's sync API
    runs an event loop on the main thread until it stops, and later tests (Temporal's) call
    asyncio.run() there."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium) "
            "or point _LAMBDARUN_TEST_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def screenshot(page: Any) -> Callable[[str], Path]:
    """``screenshot(name)`` saves the page under ``test-artifacts/dashboard/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
