"""The batch event and reply of :mod:`lambdarun.protocol`."""

from __future__ import annotations

import base64
import json

import pytest

from lambdarun.errors import EventError, RemoteEnvironmentError
from lambdarun.protocol import (
    BATCH_EVENT_VERSION,
    MAX_BATCH,
    build_batch_event,
    build_batch_reply,
    build_call_event,
    build_refused_reply,
    build_reply,
    is_batch_event,
    is_call_event,
    parse_batch_event,
    parse_batch_reply,
)


def test_a_batch_round_trips():
    calls = [build_call_event(call=b"one"), build_call_event(call_url="s3://b/k")]
    event = build_batch_event(calls)
    assert is_batch_event(event) and not is_call_event(event) and event["lambdarun"] == BATCH_EVENT_VERSION
    assert parse_batch_event(json.loads(json.dumps(event))) == calls
    reply = build_batch_reply([build_reply(outcome=b"x"), build_reply(outcome_url="s3://b/o"),
                               build_refused_reply(EventError("bad"))])
    first, second, third = parse_batch_reply(json.dumps(reply).encode(), function_name="f", count=3)
    assert first.outcome == b"x" and second.outcome_url == "s3://b/o"
    assert third.refused == ("lambdarun.errors.EventError", "bad")


@pytest.mark.parametrize("size", [0, MAX_BATCH + 1])
def test_a_batch_has_1_to_max_calls(size):
    with pytest.raises(ValueError):
        build_batch_event([build_call_event(call=b"x")] * size)
    with pytest.raises(EventError, match="nothing ran"):
        parse_batch_event({"lambdarun": BATCH_EVENT_VERSION, "batch": [{}] * size})


@pytest.mark.parametrize("batch", ["text", None, 3, {"a": 1}, [1, 2], [[]], ["call"]])
def test_malformed_batches_are_refused(batch):
    with pytest.raises(EventError):
        parse_batch_event({"lambdarun": BATCH_EVENT_VERSION, "batch": batch})


@pytest.mark.parametrize("payload", [
    b"not json",
    json.dumps({"lambdarun": 1, "outcome": base64.b64encode(b"x").decode()}).encode(),  # an old runtime
    json.dumps({"lambdarun": 2, "replies": []}).encode(),  # too few
    json.dumps({"lambdarun": 2, "replies": [{"outcome_url": 5}]}).encode(),
    json.dumps({"lambdarun": 2, "replies": [{"outcome": "%%%"}]}).encode(),
    json.dumps({"lambdarun": 2, "replies": [{"what": 1}]}).encode(),
])
def test_a_reply_that_is_not_a_batch_reply_is_an_environment_error(payload):
    with pytest.raises(RemoteEnvironmentError):
        parse_batch_reply(payload, function_name="f", count=1)
