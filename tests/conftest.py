"""Core test fixtures. The generic ones (fresh plugin manager, fresh session) come from
lambdarun's own pytest plugin (``lambdarun.pytest_plugin``), as users get them."""

from __future__ import annotations

import concurrent.futures
import itertools
import textwrap
from pathlib import Path

import pytest

from lambdarun import hookimpl
from lambdarun.backends import Backend
from lambdarun.calls import decode_outcome, encode_call, execute_call
from lambdarun.futures import LambdaFuture
from lambdarun.local.testing import moto_server_fixture


#: a signing key for sessions that run no target (unit tests): at least 32 bytes
TEST_KEY = "unit-test-signing-key-0123456789abcdef"


class InProcessBackend(Backend):
    """A backend that runs calls through the real envelope path in a local thread pool.

    It exercises everything the core owns (encode_call, the runtime's execute_call,
    decode_outcome, futures, map ordering) without a Lambda target.
    """

    id = "inprocess"

    def __init__(self, session):
        super().__init__(session)
        self.pool = concurrent.futures.ThreadPoolExecutor(4)
        self.counter = itertools.count()

    def submit(self, func, args, kwargs):
        task_id = f"inprocess-{next(self.counter)}"
        data = encode_call(self.session, func, args, kwargs, meta={"task_id": task_id, "attempt": 1})
        future = LambdaFuture()

        def work():
            if future.cancelled():  # cancelled while queued: never runs
                return
            future.mark_running()
            outcome = decode_outcome(
                self.session, execute_call(self.session, data, tee=False), task_id=task_id, attempt=1
            )
            future.finish(
                outcome.value,
                exception=outcome.exception,
                stdout=outcome.stdout,
                stderr=outcome.stderr,
                remote_traceback=outcome.remote_traceback,
            )

        self.pool.submit(work)
        return future

    def close(self):
        self.pool.shutdown(wait=True)


class InProcessBackendPlugin:
    @hookimpl
    def lambdarun_register_backends(self, register):
        register.add_backend(InProcessBackend)


@pytest.fixture
def inprocess_session(lambdarun_session, tmp_path):
    return lambdarun_session(
        InProcessBackendPlugin(),
        overrides={
            "backend": "inprocess",
            "storage_url": (tmp_path / "store").as_uri(),
            "signing_key": TEST_KEY,
        },
    )


@pytest.fixture
def make_distribution(tmp_path, monkeypatch):
    """Write a real (unpacked) distribution onto sys.path that importlib.metadata finds."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return lambda *a, **kw: _make_distribution(root, *a, **kw)


def _make_distribution(
    root: Path, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str] | None = None
) -> Path:
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[lambdarun]\n{lines}\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return dist_info


#: moto's real server on 127.0.0.1 (a free port), stopped at the end of the session
moto_endpoint = moto_server_fixture(scope="session")


@pytest.fixture
def aws_session(lambdarun_session, moto_endpoint, monkeypatch):
    """A session on the ``aws`` target pointed at moto's server with dummy credentials."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return lambdarun_session(overrides={"target": "aws", "aws": {"endpoint_url": moto_endpoint}})
