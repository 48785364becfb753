"""Fixtures: one local stack (the real local Lambda service + moto's S3) for the test session,
and a fresh lambdarun Session per test, attached to it like a user's session would be."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import lambdarun_covalent.plugin
from lambdarun.local.testing import local_stack_fixture, session_fixtures, session_plugins
from lambdarun.testing.waiting import wait_for
from lambdarun_covalent.backend import KEY_ROOT
from lambdarun_covalent.engine import live_engines

# Covalent (optional) writes its config, cache and data directories when imported: keep them
# out of the developer's home for this test run
if "COVALENT_CONFIG_DIR" not in os.environ:
    _covalent_home = tempfile.mkdtemp(prefix="lambdarun-covalent-tests-")
    for _var, _sub in (
        ("COVALENT_CONFIG_DIR", "config"),
        ("COVALENT_CACHE_DIR", "cache"),
        ("COVALENT_DATA_DIR", "data"),
        ("COVALENT_LOGDIR", "logs"),
        ("COVALENT_DISPATCH_CACHE_DIR", "dispatches"),
        ("COVALENT_EXECUTOR_DIR", "executors"),
        ("COVALENT_DATABASE", "data/dispatcher_db.sqlite"),
        ("COVALENT_HEARTBEAT_FILE", "cache/heartbeat"),
    ):
        os.environ[_var] = os.path.join(_covalent_home, _sub)
    atexit.register(shutil.rmtree, _covalent_home, True)

#: the real local target; quick async retries so failed Event invocations settle fast
covalent_stack = local_stack_fixture(scope="session", async_retry_delay=0.1)


@pytest.fixture(scope="session")
def local_stack(covalent_stack: Any) -> Iterator[Any]:
    """The stack of these tests. Before it stops, nothing may still be watched for an
    asynchronous outcome: a watch left then polls a stopped stack (the clean-up of a
    cancelled attempt lasts :data:`~lambdarun_covalent.async_attempts.JANITOR_GRACE` when
    the stack stops its invocation)."""
    yield covalent_stack
    wait_for(
        lambda: not any(engine.watching() for engine in live_engines()),
        "the covalent engines to stop watching asynchronous attempts before the stack stops",
        timeout=60,
    )

#: a function name of our own, so other suites' function settings never interfere
FUNCTION = "lambdarun-covalent-tests"


def plugins() -> list[Any]:
    return session_plugins(lambdarun_covalent.plugin)


#: ``make_session(core=None, **covalent_options)``: a fresh Session on the local stack
make_session, session = session_fixtures("local_stack", [lambdarun_covalent.plugin], "covalent", function_name=FUNCTION)


@pytest.fixture
def leftovers() -> Callable[[Any], list[str]]:
    """``leftovers(session)``: the objects the covalent backend left in the session's storage."""

    def objects(session: Any) -> list[str]:
        return session.storage().list(KEY_ROOT + "/")

    return objects


@pytest.fixture
def plain_session(lambdarun_session: Callable[..., Any], local_stack: Any) -> Any:
    """A fresh Session on the local stack with no ``[covalent]`` settings at all."""
    return lambdarun_session(
        *plugins(), overrides={"target": "local", "local": {"state_dir": str(local_stack.state_dir)}}
    )
