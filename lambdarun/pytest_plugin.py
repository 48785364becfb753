"""pytest fixtures for people who write lambdarun plugins or test code that uses lambdarun.

Installed with lambdarun (entry point ``pytest11``), so the fixtures are available in any
test suite:

``lambdarun_plugin_manager``
    factory: ``lambdarun_plugin_manager(*plugins, load_entrypoints=False)`` returns a fresh
    plugin manager with the built-ins plus ``plugins``.
``lambdarun_session``
    factory: ``lambdarun_session(*plugins, overrides=None, environ=None)`` returns a fresh
    :class:`lambdarun.session.Session` (closed after the test); config files and
    ``LAMBDARUN_*`` variables of the developer's machine are ignored unless ``environ``
    passes them.
``lambdarun_local_session``
    factory like ``lambdarun_session`` for sessions on the local target, attached to the
    test session's private local stack (``local_stack``).
``local_stack``, ``local_lambda_client``, ``local_s3_client``, ``local_dynamodb_client``,
``local_aws_env``, ``lambdarun_local_env``
    a private local Lambda target for the test session (see :mod:`lambdarun.local.testing`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from lambdarun.local.testing import (  # noqa: F401 - re-exported fixtures
    lambdarun_local_env,
    local_aws_env,
    local_dynamodb_client,
    local_lambda_client,
    local_s3_client,
    local_stack,
)


@pytest.fixture
def lambdarun_plugin_manager() -> Any:
    from lambdarun.plugins import make_plugin_manager

    def factory(*plugins: Any, load_entrypoints: bool = False, block: tuple[str, ...] = ()) -> Any:
        return make_plugin_manager(plugins, load_entrypoints=load_entrypoints, block=block, environ={})

    return factory


@pytest.fixture
def lambdarun_session(lambdarun_plugin_manager: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from lambdarun.session import Session

    sessions: list[Session] = []

    def factory(
        *plugins: Any,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        load_entrypoints: bool = False,
    ) -> Session:
        pm = lambdarun_plugin_manager(*plugins, load_entrypoints=load_entrypoints)
        session = Session(pm, overrides=overrides, environ=environ or {}, cwd=tmp_path_factory.mktemp("cfg"))
        sessions.append(session)
        return session

    yield factory
    for session in sessions:
        session.close()


@pytest.fixture
def lambdarun_local_session(lambdarun_session: Any, local_stack: Any) -> Any:
    def factory(*plugins: Any, overrides: Mapping[str, Any] | None = None, load_entrypoints: bool = True) -> Any:
        merged = dict(overrides or {})
        merged["target"] = "local"
        merged["local"] = {**merged.get("local", {}), "state_dir": str(local_stack.state_dir)}
        return lambdarun_session(*plugins, overrides=merged, load_entrypoints=load_entrypoints)

    return factory
