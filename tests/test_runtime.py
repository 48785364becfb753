"""The Lambda-side handler: event dispatch through lambdarun_handle_event, inline and stored outcomes."""

from __future__ import annotations

import base64
import uuid
import threading
import time

import pytest

import lambdarun.runtime as runtime
from lambdarun import hookimpl
from lambdarun.calls import decode_outcome, encode_call
from lambdarun.errors import PayloadTooLargeError

KEY = "runtime-test-signing-key-0123456789abcdef"
BUCKET = "lambdarun-runtime-tests"


def big(n):
    return b"x" * n


#: the task id of this test's calls: each attempt runs at most once (a claim), so every test
#: calls under a task id of its own
TASK = {"id": "t1"}


@pytest.fixture(autouse=True)
def fresh_task_id():
    TASK["id"] = uuid.uuid4().hex


def call_event(session, func, *args, **extra):
    data = encode_call(session, func, args, task_id=TASK["id"])
    return {"lambdarun": 1, "call": base64.b64encode(data).decode(), **extra}


def outcome_of(session, data):
    return decode_outcome(session, data, task_id=TASK["id"], attempt=1)


@pytest.fixture
def session(aws_session, lambdarun_session, moto_endpoint):
    """A Lambda-side session: signing key, and storage in moto's S3 (the only prefix its
    events may name)."""
    s3 = aws_session.target.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return lambdarun_session(
        overrides={
            "target": "aws",
            "aws": {"endpoint_url": moto_endpoint},
            "signing_key": KEY,
            "storage_url": f"s3://{BUCKET}/lr",
        }
    )


def test_call_event_is_answered_inline(session):
    response = session.pm.hook.lambdarun_handle_event(event=call_event(session, pow, 2, 8), context=None, session=session)
    assert outcome_of(session, base64.b64decode(response["outcome"])).value == 256


def test_large_outcome_is_stored_at_result_url(session):
    url = f"s3://{BUCKET}/lr/attempt-1/outcome"
    event = call_event(session, big, 5000, result_url=url, inline_limit=1000)
    response = session.pm.hook.lambdarun_handle_event(event=event, context=None, session=session)
    assert response == {"lambdarun": 1, "outcome_url": url}
    storage, key = session.open_url(url)
    assert outcome_of(session, storage.get(key)).value == b"x" * 5000


def test_call_can_come_by_reference(session):
    storage = session.storage()
    storage.put("calls/call", encode_call(session, sum, ([1, 2, 3],), task_id=TASK["id"]))
    event = {"lambdarun": 1, "call_url": storage.url_for("calls/call")}
    response = session.pm.hook.lambdarun_handle_event(event=event, context=None, session=session)
    assert outcome_of(session, base64.b64decode(response["outcome"])).value == 6


def test_oversized_outcome_without_storage_is_a_typed_error(session):
    event = call_event(session, big, 5000, inline_limit=1000)
    response = session.pm.hook.lambdarun_handle_event(event=event, context=None, session=session)
    with pytest.raises(PayloadTooLargeError, match="over the inline limit"):
        outcome_of(session, base64.b64decode(response["outcome"])).unwrap()


class EchoPlugin:
    @hookimpl
    def lambdarun_handle_event(self, event, context, session):
        if isinstance(event, dict) and "echo" in event:
            return {"echoed": event["echo"], "request": getattr(context, "aws_request_id", None)}
        return None


class FakeContext:
    aws_request_id = "req-1"


def test_handler_dispatches_to_plugins_and_refuses_unknown_events(lambdarun_session, monkeypatch):
    session = lambdarun_session(EchoPlugin(), overrides={"signing_key": KEY})
    monkeypatch.setattr(runtime, "_session", session)
    assert runtime.handler({"echo": 5}, FakeContext()) == {"echoed": 5, "request": "req-1"}
    assert "outcome" in runtime.handler(call_event(session, abs, -3), FakeContext())
    with pytest.raises(runtime.UnhandledEventError, match=r"no lambdarun plugin handles this event \(keys: \['what'\]\)"):
        runtime.handler({"what": 1}, FakeContext())


_GATE = threading.Barrier(4)  # the four calls overlap for certain


def chatty(name, n):
    for i in range(n):
        print(f"{name}-{i}")
        time.sleep(0.001)
    _GATE.wait(5)
    return name


def spawns_a_thread():
    import threading

    t = threading.Thread(target=print, args=("from a thread",))
    t.start()
    t.join()
    return 1


def test_concurrent_calls_keep_their_output_apart(lambdarun_session):
    """Several calls running side by side in one process (Temporal activities) each get only
    their own stdout, and sys.stdout is restored afterwards."""
    import concurrent.futures
    import sys

    from lambdarun.calls import execute_call

    session = lambdarun_session(overrides={"signing_key": KEY})
    original = sys.stdout
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(execute_call, session, encode_call(session, chatty, (f"c{k}", 50), task_id=f"c{k}"), tee=False)
            for k in range(4)
        ]
        outcomes = [decode_outcome(session, f.result(), task_id=f"c{k}", attempt=1) for k, f in enumerate(futures)]
    for k, outcome in enumerate(outcomes):
        assert outcome.stdout == "".join(f"c{k}-{i}\n" for i in range(50))
    assert sys.stdout is original


def test_output_of_threads_started_by_the_call_is_captured(lambdarun_session):
    from lambdarun.calls import execute_call

    session = lambdarun_session(overrides={"signing_key": KEY})
    data = execute_call(session, encode_call(session, spawns_a_thread, task_id="threads"), tee=False)
    outcome = decode_outcome(session, data, task_id="threads", attempt=1)
    assert outcome.stdout == "from a thread\n"
