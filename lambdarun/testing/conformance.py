"""The conformance suite: what every storage, target and backend plugin must do.

Subclass a suite class in your plugin's tests (the class name must start with ``Test`` so
pytest collects it) and give it the fixture it asks for; every test of the suite then runs
against your object::

    from lambdarun.testing.conformance import StorageConformance

    class TestMemoryStorage(StorageConformance):
        @pytest.fixture
        def storage(self, lambdarun_session):
            session = lambdarun_session(my_plugin)
            return session.storage("mem://bucket")

==========================  ======================================================
suite                       fixtures to provide
==========================  ======================================================
:class:`StorageConformance` ``storage``: a fresh storage object (each test writes under
                            its own random prefix, so a shared bucket is fine)
:class:`TargetConformance`  ``target_session``: a Session whose target is the one under
                            test (with a signing key and a storage the function can reach)
:class:`BackendConformance` ``backend_session``: a Session whose default backend is the one
                            under test; override :meth:`BackendConformance.timeout_options`
==========================  ======================================================

Nothing here is skipped: a plugin that cannot pass a test does not conform (the storage
``create`` is required because claims, lambdarun's at-most-once guarantee, rely on it).
The remote functions come from :mod:`lambdarun.testing.tasks`, which must be importable
where the calls run (it is part of lambdarun).
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import lambdarun
from lambdarun.calls import decode_outcome, encode_call
from lambdarun.claims import claims_environment
from lambdarun.errors import EnvelopeError, StorageError, StorageKeyError, TaskTimeoutError
from lambdarun.runtime import function_environment
from lambdarun.testing import tasks
from lambdarun.testing.wire import FOREIGN_KEY, call_event, marker_call
from lambdarun.types import FunctionSpec, InvocationType

__all__ = ["StorageConformance", "TargetConformance", "BackendConformance", "wait_for"]

#: generous: the machine running the suite may be loaded
DEADLINE = 120.0


def wait_for(condition: Callable[[], Any], *, timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------


class StorageConformance:
    """The :class:`lambdarun.types.Storage` contract. Provide a ``storage`` fixture."""

    @pytest.fixture
    def ns(self) -> str:
        """A prefix of this test's own."""
        return f"conformance-{uuid.uuid4().hex[:12]}/"

    def test_put_get_round_trip(self, storage: Any, ns: str) -> None:
        blobs = {f"{ns}empty": b"", f"{ns}bin": bytes(range(256)), f"{ns}deep/er/big": b"x" * 1_000_003}
        for key, data in blobs.items():
            storage.put(key, data)
        for key, data in blobs.items():
            assert storage.get(key) == data

    def test_put_replaces(self, storage: Any, ns: str) -> None:
        storage.put(f"{ns}k", b"one")
        storage.put(f"{ns}k", b"two")
        assert storage.get(f"{ns}k") == b"two"

    def test_exists(self, storage: Any, ns: str) -> None:
        assert storage.exists(f"{ns}k") is False
        storage.put(f"{ns}k", b"")
        assert storage.exists(f"{ns}k") is True
        assert storage.exists(f"{ns}k/child") is False

    def test_list_by_prefix(self, storage: Any, ns: str) -> None:
        for key in ("a/1", "a/2", "ab/1", "b/1"):
            storage.put(ns + key, key.encode())
        assert sorted(storage.list(f"{ns}a/")) == [f"{ns}a/1", f"{ns}a/2"]
        assert sorted(storage.list(f"{ns}a")) == [f"{ns}a/1", f"{ns}a/2", f"{ns}ab/1"]
        assert sorted(storage.list(ns)) == [f"{ns}a/1", f"{ns}a/2", f"{ns}ab/1", f"{ns}b/1"]
        assert storage.list(f"{ns}missing/") == []

    def test_missing_key_is_the_typed_error(self, storage: Any, ns: str) -> None:
        with pytest.raises(StorageKeyError, match="nothing-here"):
            storage.get(f"{ns}nothing-here")
        assert issubclass(StorageKeyError, (StorageError, KeyError))

    def test_delete(self, storage: Any, ns: str) -> None:
        storage.put(f"{ns}a/1", b"1")
        storage.put(f"{ns}a/2", b"2")
        storage.put(f"{ns}b", b"kept")
        storage.delete([f"{ns}a/1", f"{ns}a/2", f"{ns}never-there"])  # a missing key is no error
        storage.delete([])
        assert storage.list(f"{ns}a/") == []
        assert not storage.exists(f"{ns}a/1")
        with pytest.raises(StorageKeyError):
            storage.get(f"{ns}a/1")
        assert storage.get(f"{ns}b") == b"kept"

    def test_delete_many(self, storage: Any, ns: str) -> None:
        keys = [f"{ns}many/{i:04d}" for i in range(1005)]  # over S3's 1000 per request
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda key: storage.put(key, b"."), keys))
        assert len(storage.list(f"{ns}many/")) == len(keys)
        storage.delete(keys)
        assert storage.list(f"{ns}many/") == []

    def test_url_for(self, storage: Any, ns: str) -> None:
        assert storage.url_for(f"{ns}a/b") == f"{storage.url.rstrip('/')}/{ns}a/b"

    @pytest.mark.parametrize("key", ["", "/absolute", "../escape", "a/../../escape", ".."])
    def test_invalid_keys_are_refused(self, storage: Any, ns: str, key: str) -> None:
        for attempt in (
            lambda: storage.put(key, b"x"),
            lambda: storage.get(key),
            lambda: storage.url_for(key),
        ):
            with pytest.raises(StorageError, match="invalid storage key"):
                attempt()
        assert storage.list(ns) == []  # nothing was written anywhere we can see

    def test_create_is_conditional(self, storage: Any, ns: str) -> None:
        assert storage.create(f"{ns}claim", b"first") is True
        assert storage.create(f"{ns}claim", b"second") is False
        assert storage.get(f"{ns}claim") == b"first"
        storage.put(f"{ns}other", b"there")
        assert storage.create(f"{ns}other", b"late") is False
        assert storage.get(f"{ns}other") == b"there"

    def test_create_has_one_winner_under_contention(self, storage: Any, ns: str) -> None:
        contenders = 16
        barrier = threading.Barrier(contenders)

        def contend(i: int) -> bool:
            barrier.wait()
            return bool(storage.create(f"{ns}race", f"{i}".encode()))

        with concurrent.futures.ThreadPoolExecutor(contenders) as pool:
            won = list(pool.map(contend, range(contenders)))
        assert won.count(True) == 1
        assert storage.get(f"{ns}race") == str(won.index(True)).encode()

    def test_concurrent_puts_are_all_kept(self, storage: Any, ns: str) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: storage.put(f"{ns}p/{i}", str(i).encode()), range(64)))
        assert sorted(storage.list(f"{ns}p/")) == sorted(f"{ns}p/{i}" for i in range(64))
        assert all(storage.get(f"{ns}p/{i}") == str(i).encode() for i in range(64))


# ---------------------------------------------------------------------------------------
# target
# ---------------------------------------------------------------------------------------


class TargetConformance:
    """The :class:`lambdarun.types.Target` contract, through the session's invoker.

    Provide ``target_session``: a Session on the target under test whose calls are signed
    (the local target's stack provides a key) and whose ``session.storage()`` the
    function can reach. Set ``function_name`` to keep the suite's function apart.
    """

    function_name = "lambdarun-conformance"

    def spec(self, session: Any) -> FunctionSpec:
        """The suite's function: the lambdarun runtime, reaching ``session.storage()``."""
        environment = {
            **function_environment(session.settings, storage_url=session.storage().url),
            **claims_environment(session),
        }
        return FunctionSpec(name=self.function_name, timeout=60, environment=environment)

    @pytest.fixture
    def function(self, target_session: Any) -> str:
        return target_session.target.ensure_function(self.spec(target_session))

    def invoke(self, session: Any, function: str, event: Any, **kwargs: Any) -> Any:
        return session.invoker.invoke(function, json.dumps(event).encode(), **kwargs)

    def call(self, session: Any, function: str, func: Callable[..., Any], *args: Any) -> Any:
        task_id = uuid.uuid4().hex
        event = call_event(encode_call(session, func, args, task_id=task_id))
        response = self.invoke(session, function, event, invocation_type=InvocationType.REQUEST_RESPONSE)
        assert response.status_code == 200 and response.function_error is None, response.payload[:500]
        data = base64.b64decode(json.loads(response.payload)["outcome"])
        return decode_outcome(session, data, task_id=task_id, attempt=1).unwrap()

    def test_identity(self, target_session: Any) -> None:
        target = target_session.target
        assert isinstance(target.name, str) and target.name
        assert isinstance(target.region, str) and target.region
        limit = target.concurrency_limit
        assert limit is None or (isinstance(limit, int) and limit >= 1)
        for service in ("lambda", "s3"):
            url = target.endpoint_url(service)
            assert url is None or url.startswith(("http://", "https://"))

    def test_ensure_function_is_idempotent(self, target_session: Any, function: str) -> None:
        assert function == self.function_name
        assert target_session.target.ensure_function(self.spec(target_session)) == function
        assert self.call(target_session, function, tasks.add, 1, 1) == 2

    def test_invoke_sync(self, target_session: Any, function: str) -> None:
        assert self.call(target_session, function, tasks.add, 2, 3) == 5

    def test_invoke_async_stores_the_outcome(self, target_session: Any, function: str) -> None:
        session = target_session
        storage = session.storage()
        task_id, key = uuid.uuid4().hex, f"conformance/{uuid.uuid4().hex}/outcome"
        event = call_event(
            encode_call(session, tasks.square, (9,), task_id=task_id),
            result_url=storage.url_for(key), always_store=True,
        )
        response = self.invoke(session, function, event, invocation_type=InvocationType.EVENT)
        assert response.status_code == 202
        wait_for(lambda: storage.exists(key), what="the async outcome")
        assert decode_outcome(session, storage.get(key), task_id=task_id, attempt=1).unwrap() == 81
        storage.delete([key])

    def test_concurrent_invocations(self, target_session: Any, function: str) -> None:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: self.call(target_session, function, tasks.add, i, 100), range(4)))
        assert results == [100, 101, 102, 103]

    def test_unknown_event_is_a_function_error(self, target_session: Any, function: str) -> None:
        response = self.invoke(target_session, function, {"not": "lambdarun"})
        assert response.function_error == "Unhandled"
        assert b"UnhandledEventError" in response.payload

    @pytest.mark.parametrize("key", [None, FOREIGN_KEY], ids=["unsigned", "foreign-key"])
    def test_forged_call_runs_nothing(self, target_session: Any, function: str, tmp_path: Any, key: Any) -> None:
        marker = tmp_path / "unpickled"
        response = self.invoke(target_session, function, call_event(marker_call(marker, key=key)))
        assert response.status_code == 200
        body = json.loads(response.payload)
        assert "outcome" in body  # refused through the outcome channel, typed
        with pytest.raises(EnvelopeError):
            decode_outcome(target_session, base64.b64decode(body["outcome"]), task_id="attack", attempt=1)
        assert not marker.exists()


# ---------------------------------------------------------------------------------------
# backend
# ---------------------------------------------------------------------------------------


class BackendConformance:
    """The :class:`lambdarun.backends.Backend` contract, through ``lambdarun.run/submit/map``.

    Provide ``backend_session`` (a Session whose default backend is the one under test) and
    override :meth:`timeout_options` to say how a call gets a timeout in your backend.
    """

    def timeout_options(self, seconds: float) -> dict[str, Any]:
        """Call options giving a task ``seconds`` to run (e.g. ``{"covalent": {"timeout": s}}``)."""
        raise NotImplementedError("override timeout_options() in your conformance test class")

    def test_run_returns_the_value(self, backend_session: Any) -> None:
        assert lambdarun.run(tasks.add, 2, b=40, session=backend_session) == 42

    def test_submit_returns_a_future(self, backend_session: Any) -> None:
        future = lambdarun.submit(tasks.square, 12, session=backend_session)
        assert future.result(timeout=DEADLINE) == 144
        assert future.done() and not future.cancelled()

    def test_map_keeps_input_order(self, backend_session: Any) -> None:
        assert list(lambdarun.map(tasks.square, range(8), session=backend_session, progress=False)) == [
            i * i for i in range(8)
        ]

    def test_exceptions_keep_their_type(self, backend_session: Any) -> None:
        with pytest.raises(tasks.ConformanceError, match="broken on purpose") as info:
            lambdarun.run(tasks.fail, "broken on purpose", 3, session=backend_session)
        assert info.value.code == 3
        assert "broken on purpose" in info.value.remote_traceback  # type: ignore[attr-defined]

    def test_stdout_and_stderr_come_back(self, backend_session: Any) -> None:
        future = lambdarun.submit(tasks.shout, "hello", session=backend_session)
        assert future.result(timeout=DEADLINE) == "HELLO"
        assert "out: hello" in future.stdout and "err: hello" not in future.stdout
        assert "err: hello" in future.stderr

    def test_timeout_raises_task_timeout_error(self, backend_session: Any) -> None:
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            lambdarun.run(tasks.sleep_for, 60, session=backend_session, options=self.timeout_options(2))
        assert time.monotonic() - started < 60  # it did not wait for the function to finish

    def test_cancel_a_running_task(self, backend_session: Any) -> None:
        future = lambdarun.submit(tasks.sleep_for, 60, session=backend_session)
        wait_for(future.running, what="the task to start")
        assert future.cancel() is True
        assert future.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=DEADLINE)
