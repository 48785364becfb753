"""Attacks on batch events (several calls in one invocation), sent straight to a real function.

Each entry of a batch is a complete call event and is verified, claimed and answered on its
own: a forged or tampered entry is refused before anything of it is unpickled (its marker
never appears), and the well-formed batch around it changes nothing about that. A malformed
batch is refused whole, before any entry runs.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from lambdarun.testing.wire import FOREIGN_KEY, FUNCTION, call_event, invoke, marker_call

from lambdarun.calls import decode_outcome
from lambdarun.errors import EnvelopeSignatureError
from lambdarun.plugins import make_plugin_manager
from lambdarun.protocol import BATCH_EVENT_VERSION, MAX_BATCH
from lambdarun.runtime import function_environment
from lambdarun.session import Session
from lambdarun.types import FunctionSpec


@pytest.fixture(scope="module")
def caller(local_stack, tmp_path_factory):
    session = Session(
        make_plugin_manager(environ={}),
        overrides={"target": "local", "local": {"state_dir": str(local_stack.state_dir)}},
        environ={},
        cwd=tmp_path_factory.mktemp("cfg"),
    )
    session.target.ensure_function(
        FunctionSpec(name=FUNCTION, timeout=30, environment=function_environment(session.settings))
    )
    yield session
    session.close()


@pytest.fixture(scope="module")
def lam(local_stack):
    return local_stack.client("lambda")


def task() -> str:
    return f"batch-attack-{uuid.uuid4().hex}"


def batch(*events):
    return {"lambdarun": BATCH_EVENT_VERSION, "batch": list(events)}


def outcome(caller, reply, task_id):
    return decode_outcome(caller, base64.b64decode(reply["outcome"]), task_id=task_id, attempt=1)


def test_control_every_signed_call_of_a_batch_runs(caller, lam, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    ids = task(), task()
    error, payload, _ = invoke(lam, batch(
        call_event(marker_call(first, task_id=ids[0], key=caller.signing_key)),
        call_event(marker_call(second, task_id=ids[1], key=caller.signing_key)),
    ))
    assert error is None and len(payload["replies"]) == 2
    assert first.exists() and second.exists()  # so the refusals below can fail


def test_a_tampered_entry_is_refused_and_the_others_still_run(caller, lam, tmp_path):
    good, unsigned, foreign, flipped = (tmp_path / n for n in ("good", "unsigned", "foreign", "flipped"))
    ids = [task() for _ in range(4)]
    tampered = bytearray(marker_call(flipped, task_id=ids[3], key=caller.signing_key))
    tampered[-3] ^= 0x01
    error, payload, _ = invoke(lam, batch(
        call_event(marker_call(good, task_id=ids[0], key=caller.signing_key)),
        call_event(marker_call(unsigned, task_id=ids[1])),
        call_event(marker_call(foreign, task_id=ids[2], key=FOREIGN_KEY)),
        call_event(bytes(tampered)),
    ))
    assert error is None
    replies = payload["replies"]
    assert good.exists()
    for reply, task_id in zip(replies[1:], ids[1:]):
        with pytest.raises(EnvelopeSignatureError):
            outcome(caller, reply, task_id)
    assert not unsigned.exists() and not foreign.exists() and not flipped.exists()


@pytest.mark.parametrize("entries", [
    "not a list",
    [],
    {"0": "a dict"},
    None,
])
def test_a_malformed_batch_is_refused_whole(caller, lam, tmp_path, entries):
    error, payload, _ = invoke(lam, {"lambdarun": BATCH_EVENT_VERSION, "batch": entries})
    assert error == "Unhandled" and payload["errorType"] == "EventError"


def test_an_oversized_batch_is_refused_before_any_entry_runs(caller, lam, tmp_path):
    marker = tmp_path / "marker"
    entry = call_event(marker_call(marker, task_id=task(), key=caller.signing_key))
    error, payload, _ = invoke(lam, batch(*[entry] * (MAX_BATCH + 1)))
    assert error == "Unhandled" and payload["errorType"] == "EventError" and "1000" in payload["errorMessage"]
    assert not marker.exists()


def test_an_entry_that_is_not_a_call_is_refused_whole_before_anything_runs(caller, lam, tmp_path):
    marker = tmp_path / "marker"
    good = call_event(marker_call(marker, task_id=task(), key=caller.signing_key))
    error, payload, _ = invoke(lam, batch(good, "a string"))
    assert error == "Unhandled" and payload["errorType"] == "EventError"
    assert not marker.exists()


def test_nested_batches_and_foreign_locations_are_refused_per_entry(caller, lam, tmp_path, local_stack):
    nested, located = tmp_path / "nested", tmp_path / "located"
    inner = batch(call_event(marker_call(nested, task_id=task(), key=caller.signing_key)))
    error, payload, _ = invoke(lam, batch(
        inner,
        call_event(marker_call(located, task_id=task(), key=caller.signing_key), result_url="file:///tmp/x"),
        {"lambdarun": 1, "call_url": "file:///etc/passwd"},
    ))
    assert error is None
    kinds = [reply["error"]["type"] for reply in payload["replies"]]
    assert kinds == ["lambdarun.errors.EventError", "lambdarun.errors.UntrustedLocationError",
                     "lambdarun.errors.UntrustedLocationError"]
    assert not nested.exists() and not located.exists()


def test_the_same_call_twice_in_a_batch_runs_once(caller, lam, tmp_path):
    marker = tmp_path / "count"
    task_id = task()
    entry = call_event(marker_call(marker, task_id=task_id, key=caller.signing_key))
    error, payload, _ = invoke(lam, batch(entry, entry))
    assert error is None
    first, second = payload["replies"]
    assert first == second  # the duplicate got the first delivery's outcome, byte for byte
    assert marker.exists()
