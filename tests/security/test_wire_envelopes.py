"""Attacks on the Lambda side of the wire, sent straight to a real function with boto3 Invoke.

The function runs ``lambdarun.runtime.handler`` on a real local stack and gets the stack's
signing key from its Secrets Manager secret. Each attacking call carries a pickle that
creates a marker file when it is unpickled: every refusal asserts the typed error AND that
the marker never appeared (the control test shows the marker does appear when the same
pickle is correctly signed, so these tests can fail).
"""

from __future__ import annotations

import base64
import time
import uuid

import msgpack
import pytest
from lambdarun.testing.wire import (
    FOREIGN_KEY,
    FUNCTION,
    call_event,
    forge,
    invoke,
    marker_call,
    marker_pickle,
)

from lambdarun.calls import decode_outcome, encode_call
from lambdarun.envelope import PYTHON_VERSION
from lambdarun.errors import (
    EnvelopeError,
    EnvelopeExpiredError,
    EnvelopeSignatureError,
)
from lambdarun.plugins import make_plugin_manager
from lambdarun.runtime import function_environment
from lambdarun.session import Session
from lambdarun.types import FunctionSpec

@pytest.fixture(scope="module")
def caller(local_stack, tmp_path_factory):
    """A caller with no configuration at all on the local target (a fresh install)."""
    session = Session(
        make_plugin_manager(environ={}),
        overrides={"target": "local", "local": {"state_dir": str(local_stack.state_dir)}},
        environ={},
        cwd=tmp_path_factory.mktemp("cfg"),
    )
    session.target.ensure_function(FunctionSpec(name=FUNCTION, timeout=30, environment=function_environment(session.settings)))
    yield session
    session.close()


@pytest.fixture(scope="module")
def lam(local_stack):
    return local_stack.client("lambda")


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "marker"
    yield path


#: the task id of this test's attack calls: each attempt runs at most once (a claim on the
#: shared stack), so every test attacks under a task id of its own
TASK = {"id": "attack"}


@pytest.fixture(autouse=True)
def fresh_task_id():
    TASK["id"] = f"attack-{uuid.uuid4().hex}"


def refusal(caller, payload):
    """The outcome in ``payload`` decoded as the caller would (raises the refusal)."""
    data = base64.b64decode(payload["outcome"])
    return decode_outcome(caller, data, task_id=TASK["id"], attempt=1)


def test_control_a_correctly_signed_call_does_run(caller, lam, marker):
    """The marker mechanism works: the same pickle, signed with the stack's key, is loaded."""
    error, payload, _ = invoke(lam, call_event(marker_call(marker, task_id=TASK["id"], key=caller.signing_key)))
    assert error is None and "outcome" in payload
    assert marker.exists()


def test_unsigned_call_is_refused_before_unpickling(caller, lam, marker):
    error, payload, _ = invoke(lam, call_event(marker_call(marker, task_id=TASK["id"])))
    assert error is None
    with pytest.raises(EnvelopeSignatureError, match="unsigned envelope"):
        refusal(caller, payload)
    assert not marker.exists()


def test_bit_flipped_signature_is_refused(caller, lam, marker):
    good = marker_call(marker, task_id=TASK["id"], key=caller.signing_key)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(good[:64])
    magic, version, signature = unpacker.unpack()
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    forged = msgpack.packb([magic, version, flipped], use_bin_type=True) + good[unpacker.tell():]
    error, payload, _ = invoke(lam, call_event(forged))
    with pytest.raises(EnvelopeSignatureError, match="signature is wrong"):
        refusal(caller, payload)
    assert not marker.exists()


def test_bit_flipped_body_is_refused(caller, lam, marker):
    good = bytearray(marker_call(marker, task_id=TASK["id"], key=caller.signing_key))
    good[-3] ^= 0x01  # inside the body (meta), signature unchanged
    error, payload, _ = invoke(lam, call_event(bytes(good)))
    with pytest.raises(EnvelopeSignatureError, match="signature is wrong"):
        refusal(caller, payload)
    assert not marker.exists()


def test_call_signed_with_a_foreign_key_is_refused(caller, lam, marker):
    error, payload, _ = invoke(lam, call_event(marker_call(marker, task_id=TASK["id"], key=FOREIGN_KEY)))
    with pytest.raises(EnvelopeSignatureError, match="signature is wrong"):
        refusal(caller, payload)
    assert not marker.exists()


def test_expired_call_is_refused_but_still_answered_for_its_task(caller, lam, marker):
    old = time.time() - caller.settings.envelope_max_age - 60
    error, payload, _ = invoke(lam, call_event(marker_call(marker, task_id=TASK["id"], key=caller.signing_key, issued=old)))
    # the signature was good, so the refusal is bound to the task like any outcome
    outcome = refusal(caller, payload)
    assert not outcome.ok
    with pytest.raises(EnvelopeExpiredError, match="issued .* s ago"):
        outcome.unwrap()
    assert not marker.exists()


def test_call_issued_in_the_future_is_refused(caller, lam, marker):
    error, payload, _ = invoke(lam, call_event(marker_call(marker, task_id=TASK["id"], key=caller.signing_key, issued=time.time() + 3600)))
    with pytest.raises(EnvelopeExpiredError, match="in the future"):
        refusal(caller, payload).unwrap()
    assert not marker.exists()


def test_call_without_issue_time_is_refused(caller, lam, marker):
    body = [PYTHON_VERSION, "call", [["cloudpickle", marker_pickle(marker)]],
            {"nargs": 0, "kwargs": [], "task_id": TASK["id"], "attempt": 1}, None]
    error, payload, _ = invoke(lam, call_event(forge("call", [], {}, key=caller.signing_key, body=body)))
    with pytest.raises(EnvelopeExpiredError, match="without an issue time"):
        refusal(caller, payload).unwrap()
    assert not marker.exists()


def test_replayed_captured_call_is_refused_once_expired(caller, lam, marker, monkeypatch):
    """A captured envelope keeps working only until envelope_max_age (replays inside the
    window are the at-most-once claim's job)."""
    # a legitimate call that leaves the marker when it runs (a bound method of pathlib, so
    # the function can load it by reference)
    captured = encode_call(caller, marker.write_text, ("ran",), meta={"task_id": TASK["id"], "attempt": 1})
    error, payload, _ = invoke(lam, call_event(captured))
    assert refusal(caller, payload).value == 3 and marker.read_text() == "ran"
    marker.unlink()
    # the same bytes, checked later than max_age: simulate the receiver's clock moving on
    from lambdarun import envelope as envelope_module

    with pytest.raises(EnvelopeExpiredError):
        envelope_module.unpack(captured, caller.signing_key, max_age=caller.settings.envelope_max_age,
                               now=time.time() + caller.settings.envelope_max_age + 1)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("signature", "error"),
    [("a string", EnvelopeSignatureError), (12345, EnvelopeSignatureError), ([1, 2], EnvelopeSignatureError)],
)
def test_signature_field_of_the_wrong_type_is_refused(caller, lam, marker, signature, error):
    data = marker_call(marker, task_id=TASK["id"], signature=signature)
    _, payload, _ = invoke(lam, call_event(data))
    with pytest.raises(error, match="signature field"):
        refusal(caller, payload)
    assert not marker.exists()


@pytest.mark.parametrize(
    "body",
    [
        ["3.11", "call"],  # too short
        {"not": "a list"},
        [PYTHON_VERSION, 7, [], {}, None],  # kind not a string
        [PYTHON_VERSION, "call", [["cloudpickle", "text, not bytes"]], {}, None],
        [PYTHON_VERSION, "call", "parts", {}, None],
        [PYTHON_VERSION, "call", [], {1: "int key"}, None],
        [PYTHON_VERSION, "call", [], {}, 5],  # ref not a string
    ],
)
def test_signed_body_of_the_wrong_shape_is_refused(caller, lam, marker, body):
    """Even correctly signed (a sender with a bug), a malformed body is a typed refusal."""
    data = forge("call", [], {}, key=caller.signing_key, body=body)
    _, payload, _ = invoke(lam, call_event(data))
    with pytest.raises(EnvelopeError, match="corrupt envelope body"):
        refusal(caller, payload)


def test_signed_call_whose_meta_does_not_match_its_parts_is_refused(caller, lam, marker):
    meta = {"nargs": 3, "kwargs": [], "task_id": TASK["id"], "attempt": 1}
    data = forge("call", [("cloudpickle", marker_pickle(marker))], meta, key=caller.signing_key)
    _, payload, _ = invoke(lam, call_event(data))
    with pytest.raises(EnvelopeError, match="nargs/kwargs do not match"):
        refusal(caller, payload).unwrap()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("call", 123, "'call' must be str"),
        ("call", ["x"], "'call' must be str"),
        ("call", "!!! not base64 !!!", "not valid base64"),
        ("inline_limit", "10", "'inline_limit' must be int"),
        ("inline_limit", True, "'inline_limit' must be int"),
        ("inline_limit", -1, "must be 0 or more"),
        ("always_store", "yes", "'always_store' must be bool"),
        ("result_url", 5, "'result_url' must be str"),
    ],
)
def test_event_fields_of_the_wrong_type_or_encoding_are_refused(caller, lam, marker, field, value, message):
    event = call_event(marker_call(marker, task_id=TASK["id"], key=caller.signing_key))
    event[field] = value
    error, payload, _ = invoke(lam, event)
    assert error == "Unhandled"
    assert payload["errorType"] == "EventError"
    assert message in payload["errorMessage"]
    assert not marker.exists()


def test_call_url_of_the_wrong_type_is_refused(caller, lam, marker):
    error, payload, _ = invoke(lam, {"lambdarun": 1, "call_url": {"bucket": "x"}})
    assert error == "Unhandled" and payload["errorType"] == "EventError"
