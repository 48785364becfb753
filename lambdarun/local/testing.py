"""pytest support for code that runs on the local target.

Ready-made fixtures (import them into a ``conftest.py``, or use the project's pytest plugin)::

    from lambdarun.local.testing import local_stack, local_lambda_client, local_s3_client

    def test_it(local_lambda_client):
        local_lambda_client.create_function(...)

or build one with other options and scope::

    from lambdarun.local.testing import local_stack_fixture
    local_stack = local_stack_fixture(scope="module", async_retry_delay=0.1)

Helpers: :func:`make_zip` and :func:`create_function` (zip up source text and create).
"""

from __future__ import annotations

import io
import sys
import textwrap
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

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
