"""The conformance suite itself: a storage that breaks the contract fails exactly the tests
that check what it breaks, and a correct one passes them all (so the suite can fail)."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

STORAGE = '''
import threading

import pytest

from lambdarun.errors import StorageKeyError
from lambdarun.storage import check_key
from lambdarun.testing.conformance import StorageConformance


class Store:
    def __init__(self, url, *, validate=True, conditional=True, typed=True):
        self.url, self.blobs, self.lock = url, {}, threading.Lock()
        self.check = check_key if validate else (lambda key: key)
        self.conditional, self.typed = conditional, typed

    def put(self, key, data):
        self.blobs[self.check(key)] = bytes(data)

    def create(self, key, data):
        with self.lock:
            if self.conditional and self.check(key) in self.blobs:
                return False
            self.blobs[key] = bytes(data)
            return True

    def get(self, key):
        try:
            return self.blobs[self.check(key)]
        except KeyError:
            if self.typed:
                raise StorageKeyError(key) from None
            raise

    def exists(self, key):
        return self.check(key) in self.blobs

    def list(self, prefix):
        return sorted(k for k in list(self.blobs) if k.startswith(prefix))

    def delete(self, keys):
        for key in keys:
            self.blobs.pop(self.check(key), None)

    def url_for(self, key):
        return f"{self.url}/{self.check(key)}"


class TestGood(StorageConformance):
    @pytest.fixture
    def storage(self):
        return Store("mem://good")


class TestNoKeyValidation(StorageConformance):
    @pytest.fixture
    def storage(self):
        return Store("mem://a", validate=False)


class TestUnconditionalCreate(StorageConformance):
    @pytest.fixture
    def storage(self):
        return Store("mem://b", conditional=False)


class TestUntypedMissingKey(StorageConformance):
    @pytest.fixture
    def storage(self):
        return Store("mem://c", typed=False)
'''


def test_storage_suite_fails_exactly_what_is_broken(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=textwrap.dedent(STORAGE))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rf")
    outcomes = result.parseoutcomes()
    failed = {line.split("::", 1)[1].split(" ", 1)[0] for line in result.outlines if line.startswith("FAILED ")}
    assert not any(name.startswith("TestGood::") for name in failed), failed
    assert {n for n in failed if n.startswith("TestNoKeyValidation::")} == {
        f"TestNoKeyValidation::test_invalid_keys_are_refused[{key}]"
        for key in ("", "/absolute", "../escape", "a/../../escape", "..")
    }
    assert {n for n in failed if n.startswith("TestUnconditionalCreate::")} == {
        "TestUnconditionalCreate::test_create_is_conditional",
        "TestUnconditionalCreate::test_create_has_one_winner_under_contention",
    }
    assert {n for n in failed if n.startswith("TestUntypedMissingKey::")} == {
        "TestUntypedMissingKey::test_missing_key_is_the_typed_error",
        "TestUntypedMissingKey::test_delete",
    }
    assert outcomes["failed"] == len(failed) == 9
