"""pytest support for code that runs on the local target.

Ready-made fixtures (import them into a ``conftest.py``, or use the project's pytest plugin)::

    from lambdarun.local.testing import local_stack, local_lambda_client, local_s3_client

    def test_it(local_lambda_client):
        local_lambda_client.create_function(...)

or build one with other options and scope::

    from lambdarun.local.testing import local_stack_fixture
    local_stack = local_stack_fixture(scope="module", async_retry_delay=0.1)

Helpers: :func:`make_zip` and :func:`create_function` (zip up source text and create).

For test suites of lambdarun itself and of plugins (also public):

* :func:`session_plugins` / :func:`make_local_session`: a lambdarun Session attached to a
  stack, with the plugins under test (and the local target's plugin when the core does not
  load it by default);
* :func:`functions_view`, :func:`busy_pids`, :func:`invocation_records`,
  :class:`InvocationLog`: what the local service's
  read-only extension API says about functions, environments and invocation records;
* :func:`start_local_up` and the ``shared_stack`` fixture: ``lambdarun local up`` in a
  subprocess and its ``export`` lines.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode

import pytest

from lambdarun.local.stack import LocalStack

__all__ = [
    "local_stack_fixture",
    "local_stack",
    "local_lambda_client",
    "local_s3_client",
    "local_dynamodb_client",
    "local_aws_env",
    "lambdarun_local_env",
    "make_zip",
    "create_function",
    "moto_server_fixture",
    "session_plugins",
    "make_local_session",
    "session_fixtures",
    "functions_view",
    "busy_pids",
    "invocation_records",
    "InvocationLog",
    "LocalUp",
    "start_local_up",
    "shared_stack",
]


def local_stack_fixture(scope: str = "session", **options: Any) -> Any:
    """Return a pytest fixture yielding a started, private :class:`LocalStack`.

    ``options`` are :class:`LocalStack` keyword arguments (``max_concurrency``,
    ``idle_timeout``, ``async_retries``, ``async_retry_delay``, ...). The stack lives in a
    temporary state directory, never attaches to another one, and is stopped (every worker
    process gone) when the fixture's scope ends. It records itself in that directory's
    ``stack.json``, so a :class:`~lambdarun.session.Session` (in this process or a
    subprocess) whose ``[local] state_dir`` is ``stack.state_dir`` uses it instead of
    starting its own (see :func:`lambdarun_local_env`).
    """

    @pytest.fixture(scope=scope)  # type: ignore[misc]
    def _local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
        opts = dict(options)
        state_dir = opts.pop("state_dir", None) or tmp_path_factory.mktemp("lambdarun-local")
        stack = LocalStack(state_dir, reuse=False, shared=True, stop_at_exit=False, **opts)
        stack.start()
        try:
            yield stack
        finally:
            stack.stop()

    return _local_stack


def moto_server_fixture(scope: str = "session") -> Any:
    """Return a pytest fixture yielding the URL of moto's ``ThreadedMotoServer`` alone (every
    service moto serves: S3, DynamoDB, IAM, STS, ...; no local Lambda service), on 127.0.0.1
    at a free port, stopped when the fixture's scope ends."""

    @pytest.fixture(scope=scope)  # type: ignore[misc]
    def _moto_server() -> Iterator[str]:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()

    return _moto_server


#: session-scoped :class:`LocalStack` with default options
local_stack = local_stack_fixture()


@pytest.fixture(scope="session")
def local_lambda_client(local_stack: LocalStack) -> Any:
    """boto3 Lambda client on ``local_stack``."""
    return local_stack.client("lambda")


@pytest.fixture(scope="session")
def local_s3_client(local_stack: LocalStack) -> Any:
    """boto3 S3 client on ``local_stack`` (moto)."""
    return local_stack.client("s3")


@pytest.fixture(scope="session")
def local_dynamodb_client(local_stack: LocalStack) -> Any:
    """boto3 DynamoDB client on ``local_stack`` (moto)."""
    return local_stack.client("dynamodb")


@pytest.fixture
def local_aws_env(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    """Point plain ``boto3.client(...)`` calls in the test at ``local_stack``.

    Sets ``AWS_ENDPOINT_URL_*``, the region and the stack's credentials, and hides the user's
    AWS profile and credential files for the duration of the test.
    """
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for key, value in local_stack.environment().items():
        monkeypatch.setenv(key, value)
    return local_stack


@pytest.fixture
def lambdarun_local_env(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    """Make every lambdarun Session created during the test (here or in subprocesses) use
    ``local_stack``: sets ``LAMBDARUN_TARGET=local`` and ``LAMBDARUN_LOCAL__STATE_DIR``."""
    monkeypatch.setenv("LAMBDARUN_TARGET", "local")
    monkeypatch.setenv("LAMBDARUN_LOCAL__STATE_DIR", str(local_stack.state_dir))
    return local_stack


def make_zip(files: Mapping[str, str | bytes]) -> bytes:
    """A deployment package: ``{"app.py": source, ...}`` zipped in memory.

    String sources are dedented, so triple-quoted test code can be indented.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            data = textwrap.dedent(content).encode() if isinstance(content, str) else content
            zf.writestr(name, data)
    return buf.getvalue()


def create_function(
    lambda_client: Any,
    name: str,
    source: str | Mapping[str, str | bytes],
    *,
    handler: str = "app.handler",
    timeout: int = 3,
    memory_size: int = 128,
    environment: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Create ``name`` from ``source`` (the text of ``app.py``, or a file mapping)."""
    files = {"app.py": source} if isinstance(source, str) else source
    return lambda_client.create_function(
        FunctionName=name,
        Runtime=f"python{sys.version_info.major}.{sys.version_info.minor}",
        Role="arn:aws:iam::123456789012:role/lambdarun-test",
        Handler=handler,
        Code={"ZipFile": make_zip(files)},
        Timeout=timeout,
        MemorySize=memory_size,
        Environment={"Variables": dict(environment or {})},
        **kwargs,
    )


# -- sessions on a stack ---------------------------------------------------------------------


def session_plugins(*plugins: Any) -> list[Any]:
    """``plugins`` plus the local target's plugin when the core does not load it by default."""
    from lambdarun.local import plugin as local_plugin
    from lambdarun.plugins import DEFAULT_PLUGINS

    out = list(plugins)
    if not any(name.startswith("lambdarun.local") for name in DEFAULT_PLUGINS):
        out.append(local_plugin)
    return out


def make_local_session(
    lambdarun_session: Callable[..., Any],
    stack: LocalStack,
    plugins: Sequence[Any],
    *,
    core: Mapping[str, Any] | None = None,
    **sections: Any,
) -> Any:
    """A fresh Session (from the ``lambdarun_session`` fixture) on ``stack`` with
    :func:`session_plugins` of ``plugins``: target ``local`` attached to the stack's state
    directory, no progress bar, ``core`` settings, then one settings section per keyword
    (``covalent={"function_name": ...}``)."""
    overrides: dict[str, Any] = {
        "target": "local",
        "local": {"state_dir": str(stack.state_dir)},
        "progress": False,
        **(core or {}),
        **sections,
    }
    return lambdarun_session(*session_plugins(*plugins), overrides=overrides)


def session_fixtures(stack: str, plugins: Sequence[Any], section: str, **defaults: Any) -> tuple[Any, Any]:
    """The pytest fixtures ``make_session`` and ``session`` of a plugin's tests, in a conftest::

        make_session, session = session_fixtures("local_stack", [my_plugin], "covalent", function_name="f")

    ``make_session(core=None, **options)`` is a fresh :func:`make_local_session` on the
    stack fixture named ``stack``, with ``plugins`` and the ``[section]`` settings
    ``defaults`` updated by ``options``; ``session`` is ``make_session()``.
    """

    @pytest.fixture(name="make_session")
    def _make_session(lambdarun_session: Callable[..., Any], request: pytest.FixtureRequest) -> Callable[..., Any]:
        on = request.getfixturevalue(stack)

        def factory(*, core: Mapping[str, Any] | None = None, **options: Any) -> Any:
            return make_local_session(lambdarun_session, on, plugins, core=core, **{section: {**defaults, **options}})

        return factory

    @pytest.fixture(name="session")
    def _session(make_session: Callable[..., Any]) -> Any:
        return make_session()

    return _make_session, _session


# -- the local service's extension API -----------------------------------------------------


def functions_view(stack: LocalStack) -> list[dict[str, Any]]:
    """The local service's ``GET /_lambdarun/functions`` (environments with their pids)."""
    request = stack.signed_request(stack.endpoints.lambda_ + "/_lambdarun/functions")
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())["functions"]


def busy_pids(stack: LocalStack, function: str) -> list[int]:
    """Pids of ``function``'s busy environments."""
    return [
        int(env["pid"])
        for fn in functions_view(stack) if fn["name"] == function
        for env in fn["environments"] if env["state"] == "busy" and env["pid"]
    ]


def invocation_records(stack: LocalStack, function: str) -> list[dict[str, Any]]:
    """The local service's ``GET /_lambdarun/invocations`` of ``function``, newest first."""
    url = stack.endpoints.lambda_ + "/_lambdarun/invocations?" + urlencode({"function": function, "limit": 1000})
    with urllib.request.urlopen(stack.signed_request(url), timeout=10) as r:
        return json.loads(r.read())["invocations"]


class InvocationLog:
    """A stack's invocation records (its extension API), from a mark on."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack

    def mark(self, function: str) -> int:
        """The newest record's ``seq`` now (0 without any): what :meth:`settled` counts from."""
        records = invocation_records(self.stack, function)
        return records[0]["seq"] if records else 0

    def settled(self, function: str, since: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """``function``'s records after ``since``, once none of them is running or queued
        (every delivery has finished and been recorded); newest first."""
        deadline = time.monotonic() + timeout
        while True:
            records = [r for r in invocation_records(self.stack, function) if r["seq"] > since]
            if records and not any(r["status"] in ("running", "queued") for r in records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"{function}'s invocations did not all finish within {timeout} s: {records}")
            time.sleep(0.02)


# -- `lambdarun local up` in a subprocess ----------------------------------------------------


class LocalUp(NamedTuple):
    """A running ``python -m lambdarun.local up``: the process, its ``export`` lines as a
    dict, and its state directory (unpacks as ``proc, exports, state``)."""

    proc: subprocess.Popen[str]
    exports: dict[str, str]
    state_dir: Path


@contextlib.contextmanager
def start_local_up(state_dir: Path, stop_timeout: float = 30.0) -> Iterator[LocalUp]:
    """Run ``python -m lambdarun.local up --state-dir state_dir`` until its export lines are
    printed; on exit terminate it (then kill it if it has not ended after ``stop_timeout``)
    and reap it."""
    proc = subprocess.Popen([sys.executable, "-m", "lambdarun.local", "up", "--state-dir", str(state_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        exports: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("export "):
                key, _, value = line[len("export "):].strip().partition("=")
                exports[key] = value
                if key == "AWS_SECRET_ACCESS_KEY":  # the last export line
                    break
        yield LocalUp(proc, exports, state_dir)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


@pytest.fixture
def shared_stack(tmp_path: Path) -> Iterator[LocalUp]:
    """:func:`start_local_up` in ``tmp_path / "state"``, stopped after the test."""
    with start_local_up(tmp_path / "state") as up:
        yield up
