"""The example storage passes lambdarun's storage conformance suite, and lambdarun finds it."""

import pytest

import lambdarun_memory_storage
from lambdarun.testing.conformance import StorageConformance


class TestMemoryStorage(StorageConformance):
    @pytest.fixture
    def storage(self, lambdarun_session):
        return lambdarun_session(lambdarun_memory_storage).storage("mem://conformance")


def test_sessions_share_one_store_per_name(lambdarun_session):
    lambdarun_session(lambdarun_memory_storage).storage("mem://shared").put("k", b"v")
    assert lambdarun_session(lambdarun_memory_storage).storage("mem://shared/").get("k") == b"v"
    assert not lambdarun_session(lambdarun_memory_storage).storage("mem://other").exists("k")


def test_other_schemes_are_left_to_other_plugins(lambdarun_session, tmp_path):
    session = lambdarun_session(lambdarun_memory_storage)
    assert type(session.storage(tmp_path.as_uri())).__name__ == "FileStorage"
