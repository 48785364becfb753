"""The local target passes the public target conformance suite (lambdarun.testing.conformance)."""

from __future__ import annotations

from typing import Any

import pytest

from lambdarun.testing.conformance import TargetConformance


class TestLocalTargetConformance(TargetConformance):
    function_name = "lambdarun-local-conformance"

    @pytest.fixture
    def target_session(self, lambdarun_session: Any, local_stack: Any) -> Any:
        return lambdarun_session(
            overrides={"target": "local", "local": {"state_dir": str(local_stack.state_dir)}},
        )
