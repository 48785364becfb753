"""The covalent backend passes the public backend conformance suite (lambdarun.testing.conformance)."""

from __future__ import annotations

from typing import Any

import pytest

from lambdarun.testing.conformance import BackendConformance


class TestCovalentBackendConformance(BackendConformance):
    @pytest.fixture
    def backend_session(self, make_session: Any) -> Any:
        return make_session(core={"backend": "covalent"})

    def timeout_options(self, seconds: float) -> dict[str, Any]:
        return {"covalent": {"timeout": seconds}}
