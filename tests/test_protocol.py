"""The call protocol (lambdarun.protocol): one owner of the event and reply shapes."""

from __future__ import annotations

import base64
import json

import pytest

from lambdarun import protocol
from lambdarun.errors import EventError, RemoteEnvironmentError
from lambdarun.protocol import (
    CALL_EVENT_VERSION,
    build_call_event,
    build_reply,
    inline_fits,
    inline_limit_for,
    is_call_event,
    parse_call_event,
    parse_reply,
)


def test_a_call_event_round_trips_inline_and_by_reference():
    event = build_call_event(call=b"\x00envelope", result_url="s3://b/p/outcome", inline_limit=10,
                             always_store=True, extra={"mine": {"task_id": "t"}})
    event = json.loads(json.dumps(event))  # what travels is JSON
    assert event["lambdarun"] == CALL_EVENT_VERSION and event["mine"] == {"task_id": "t"}
    assert is_call_event(event)
    parsed = parse_call_event(event)
    assert parsed.inline_call() == b"\x00envelope"
    assert (parsed.call_url, parsed.result_url, parsed.inline_limit, parsed.always_store) == (
        None, "s3://b/p/outcome", 10, True)
    by_ref = parse_call_event(build_call_event(call_url="s3://b/p/call"))
    assert (by_ref.call, by_ref.call_url, by_ref.inline_limit, by_ref.always_store) == (
        None, "s3://b/p/call", protocol.DEFAULT_INLINE_LIMIT, False)


def test_an_event_carries_exactly_one_call():
    with pytest.raises(ValueError):
        build_call_event()
    with pytest.raises(ValueError):
        build_call_event(call=b"x", call_url="s3://b/c")


@pytest.mark.parametrize(
    "event",
    [
        {"lambdarun": 2, "call": "eA=="},  # another version
        {"lambdarun": "1", "call": "eA=="},
        {"lambdarun": 1},  # no call
        ["lambdarun", 1],
        None,
    ],
)
def test_other_shapes_are_not_call_events(event):
    assert not is_call_event(event)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("call", 5, "must be str"),
        ("call_url", ["s3://b/c"], "must be str"),
        ("result_url", {"url": "x"}, "must be str"),
        ("inline_limit", "100", "must be int"),
        ("inline_limit", True, "must be int"),  # a bool is not an int here
        ("inline_limit", -1, "0 or more"),
        ("always_store", 1, "must be bool"),
    ],
)
def test_malformed_fields_are_refused(field, value, message):
    event = {"lambdarun": 1, "call": "eA==", field: value}
    with pytest.raises(EventError, match=message):
        parse_call_event(event)


def test_an_inline_call_that_is_not_base64_is_refused_when_read():
    parsed = parse_call_event({"lambdarun": 1, "call": "!!! not base64 !!!"})
    with pytest.raises(EventError, match="not valid base64"):
        parsed.inline_call()


def test_inline_sizing_matches_the_event_overhead():
    limit = 6_291_456
    assert inline_limit_for(limit) == (limit - protocol.EVENT_OVERHEAD) * 3 // 4
    assert inline_limit_for(100) == 0
    fits = inline_limit_for(limit) // 3 * 3
    assert inline_fits(b"x" * fits, limit)
    assert not inline_fits(b"x" * (fits + 3), limit)


def test_a_reply_round_trips():
    inline = parse_reply(json.dumps(build_reply(outcome=b"\x01out")).encode(), function_name="f")
    assert (inline.outcome, inline.outcome_url) == (b"\x01out", None)
    stored = build_reply(outcome_url="s3://b/p/outcome", recorded=True)
    assert stored["recorded"] is True and stored["lambdarun"] == CALL_EVENT_VERSION
    assert parse_reply(json.dumps(stored).encode(), function_name="f").outcome_url == "s3://b/p/outcome"
    with pytest.raises(ValueError):
        build_reply()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"<html>gateway error</html>", "not JSON"),
        (json.dumps({"outcome": "!!!"}).encode(), "not base64"),
        (json.dumps({"outcome": 12}).encode(), "not base64"),
        (json.dumps({"statusCode": 200}).encode(), "instead of a lambdarun outcome"),
        (json.dumps([base64.b64encode(b"x").decode()]).encode(), "instead of a lambdarun outcome"),
    ],
)
def test_a_reply_that_is_not_one_names_the_function(payload, message):
    with pytest.raises(RemoteEnvironmentError, match=message) as info:
        parse_reply(payload, function_name="my-fn")
    assert "'my-fn'" in str(info.value)
