"""Shared fixtures of the local target tests: one private stack for the whole session."""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun.local.plugin as local_plugin
from lambdarun.local import LocalStack
from lambdarun.local.plugin import LocalTarget
from lambdarun.local.testing import create_function, local_stack_fixture
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session

# short async retry delay so retry tests take well under a second
local_stack = local_stack_fixture(scope="session", async_retry_delay=0.1, max_concurrency=8,
                                  cloudwatch_logs=True)

_names = itertools.count()


@pytest.fixture(scope="session")
def lam(local_stack: LocalStack) -> Any:
    """A Lambda client that does not retry, so 429s and 5xx reach the test."""
    return local_stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=60)


@pytest.fixture(scope="session")
def lam_unchecked(local_stack: LocalStack) -> Any:
    """A Lambda client without botocore's client-side parameter validation: its requests
    reach the service as written, to test the service's own (AWS's) validation."""
    return local_stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=60,
                              parameter_validation=False)


@pytest.fixture
def make_function(lam: Any) -> Iterator[Callable[..., str]]:
    """``make_function(source, **kwargs) -> name``: create a uniquely named function from
    the text of ``app.py``; every function is deleted (its workers killed) afterwards."""
    created: list[str] = []

    def make(source: str | dict[str, str], **kwargs: Any) -> str:
        name = f"fn-{next(_names)}"
        create_function(lam, name, source, **kwargs)
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            lam.delete_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass


@pytest.fixture(scope="session")
def extension(local_stack: LocalStack) -> Callable[..., Any]:
    """``extension(path, **query)``: the JSON of a signed GET of lambdarun's extension API
    (``/_lambdarun/...``) on the session's stack."""

    def get(path: str, **query: Any) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        url = local_stack.endpoints.lambda_ + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(local_stack.signed_request(url), timeout=10) as r:
            return json.loads(r.read())

    return get


@pytest.fixture
def events_decided(extension: Callable[..., Any]) -> Callable[..., list[dict[str, Any]]]:
    """``events_decided(function, timeout=20) -> records``: wait until the function's Event
    queue is drained (nothing queued, nothing waiting out a retry delay, no worker running or
    deciding one) and none of its invocation records is running or queued; returns its
    records, newest first. The positive signal that nothing more will run."""

    def wait(function: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            (fn,) = [f for f in extension("/_lambdarun/functions")["functions"] if f["name"] == function]
            records = extension("/_lambdarun/invocations", function=function, limit=1000)["invocations"]
            if fn["events"] == {"queued": 0, "retrying": 0, "workers": 0} and not any(
                r["status"] in ("running", "queued") for r in records
            ):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"{function}'s events were not all run and decided within "
                                     f"{timeout} s: {fn['events']}, {records}")
            time.sleep(0.02)

    return wait


#: register the local plugin unless the core already lists it among its built-ins
_EXTRA_PLUGINS = [] if "lambdarun.local.plugin" in DEFAULT_PLUGINS else [local_plugin]


@pytest.fixture
def target(local_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTarget]:
    """A LocalTarget on the session's stack, with a project directory (``handlers.py``
    returning ``'the cwd'``) as the current directory."""
    (tmp_path / "handlers.py").write_text("def handler(event, context):\n    return 'the cwd'\n")
    monkeypatch.chdir(tmp_path)
    session = Session(make_plugin_manager(plugins=_EXTRA_PLUGINS, load_entrypoints=False),
                      overrides={"target": "local"})
    t = LocalTarget(session.settings, stack=local_stack)
    try:
        yield t
    finally:
        t.close()
        session.close()
