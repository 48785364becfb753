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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest


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
