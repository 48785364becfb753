"""Shared fixtures of the local target tests: one private stack for the whole session."""

from __future__ import annotations

import itertools
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
