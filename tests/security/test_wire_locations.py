"""Events cannot choose where data goes: ``call_url`` and ``result_url`` are honoured only
under the function's own storage prefix (its ``LAMBDARUN_STORAGE_URL``, set from the
caller's configuration), never ``file://``. Sent straight to a real function with boto3;
every refusal asserts that nothing was read, run or written.
"""

from __future__ import annotations

import base64
import json

import pytest

from lambdarun.calls import decode_outcome, encode_call
from lambdarun.plugins import make_plugin_manager
from lambdarun.runtime import function_environment
from lambdarun.session import Session
from lambdarun.testing.wire import call_event, invoke
from lambdarun.types import FunctionSpec

FUNCTION = "lambdarun-wire-locations"
OTHER_BUCKET = "lambdarun-wire-elsewhere"


@pytest.fixture(scope="module")
def caller(local_stack, tmp_path_factory):
    session = Session(
        make_plugin_manager(environ={}),
        overrides={"target": "local", "local": {"state_dir": str(local_stack.state_dir)}},
        environ={},
        cwd=tmp_path_factory.mktemp("cfg"),
    )
    session.target.ensure_function(FunctionSpec(name=FUNCTION, timeout=30, environment=function_environment(session.settings)))
    local_stack.client("s3").create_bucket(Bucket=OTHER_BUCKET)
    yield session
    session.close()


@pytest.fixture(scope="module")
def lam(local_stack):
    return local_stack.client("lambda")


@pytest.fixture(scope="module")
def s3(local_stack):
    return local_stack.client("s3")


def legit_call(caller, marker):
    """A correctly signed call that leaves ``marker`` when it runs."""
    return encode_call(caller, marker.write_text, ("ran",), meta={"task_id": "t", "attempt": 1})


def keys(s3, bucket, prefix=""):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_control_inside_the_prefix_works(caller, lam, s3, tmp_path):
    marker = tmp_path / "marker"
    prefix = caller.storage_prefix
    url = f"{prefix}/control/outcome"
    error, payload, _ = invoke(lam, call_event(legit_call(caller, marker), result_url=url, always_store=True), function=FUNCTION)
    assert error is None and payload == {"lambdarun": 1, "outcome_url": url}
    storage, key = caller.open_url(url)
    assert decode_outcome(caller, storage.get(key), task_id="t", attempt=1).value == 3
    assert marker.exists()
    storage.delete([key])


def test_function_storage_prefix_comes_from_its_configuration(caller, lam):
    env = lam.get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    assert env["LAMBDARUN_STORAGE_URL"] == caller.storage_prefix


@pytest.mark.parametrize("make_url", [
    lambda tmp: (tmp / "victim").as_uri(),
    lambda tmp: "FILE://" + str(tmp / "victim"),
    lambda tmp: "file:" + str(tmp / "victim"),
])
def test_file_result_url_never_overwrites_a_file(caller, lam, tmp_path, make_url):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    marker = tmp_path / "marker"
    event = call_event(legit_call(caller, marker), result_url=make_url(tmp_path), always_store=True)
    error, payload, _ = invoke(lam, event, function=FUNCTION)
    assert error == "Unhandled" and payload["errorType"] == "UntrustedLocationError"
    assert "file://" in payload["errorMessage"] or "storage prefix" in payload["errorMessage"]
    assert victim.read_text() == "precious"
    assert not marker.exists()  # refused before the call ran


def test_file_call_url_does_not_reveal_whether_a_path_exists(caller, lam, tmp_path):
    existing = tmp_path / "exists"
    existing.write_bytes(b"x")
    answers = []
    for path in (existing, tmp_path / "does-not-exist"):
        error, payload, _ = invoke(lam, {"lambdarun": 1, "call_url": path.as_uri()}, function=FUNCTION)
        assert error == "Unhandled" and payload["errorType"] == "UntrustedLocationError"
        answers.append(payload["errorMessage"].replace(path.as_uri(), "<url>"))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("suffix", [
    "/../escaped/outcome",
    "/./x/outcome",
    "//x/outcome",
    "X/lookalike/outcome",  # s3://bucket/lambdarunX/...: same characters, another prefix
])
def test_result_url_escaping_the_prefix_is_refused(caller, lam, s3, tmp_path, suffix):
    marker = tmp_path / "marker"
    prefix = caller.storage_prefix
    bucket = prefix[len("s3://"):].split("/", 1)[0]
    before = keys(s3, bucket)
    event = call_event(legit_call(caller, marker), result_url=prefix + suffix, always_store=True)
    error, payload, _ = invoke(lam, event, function=FUNCTION)
    assert error == "Unhandled" and payload["errorType"] == "UntrustedLocationError"
    assert keys(s3, bucket) == before
    assert not marker.exists()


def test_result_url_in_another_bucket_is_refused(caller, lam, s3, tmp_path):
    marker = tmp_path / "marker"
    event = call_event(legit_call(caller, marker), result_url=f"s3://{OTHER_BUCKET}/loot", always_store=True)
    error, payload, _ = invoke(lam, event, function=FUNCTION)
    assert error == "Unhandled" and payload["errorType"] == "UntrustedLocationError"
    assert keys(s3, OTHER_BUCKET) == []
    assert not marker.exists()


def test_call_url_outside_the_prefix_is_not_read(caller, lam, s3, tmp_path):
    """Even a correctly signed call is not fetched from a location the event chose."""
    marker = tmp_path / "marker"
    s3.put_object(Bucket=OTHER_BUCKET, Key="call", Body=legit_call(caller, marker))
    try:
        error, payload, _ = invoke(lam, {"lambdarun": 1, "call_url": f"s3://{OTHER_BUCKET}/call"}, function=FUNCTION)
    finally:
        s3.delete_object(Bucket=OTHER_BUCKET, Key="call")
    assert error == "Unhandled" and payload["errorType"] == "UntrustedLocationError"
    assert not marker.exists()


def test_forged_failure_record_writes_nothing(caller, lam, s3, tmp_path):
    """A destination-record-shaped event (lambdarun-covalent's failure path) without a signed
    call of the task it names writes no outcome, even inside the prefix."""
    pytest.importorskip("lambdarun_covalent")
    prefix = caller.storage_prefix
    bucket, _, base = prefix[len("s3://"):].partition("/")
    url = f"{prefix}/forged-record/outcome"
    record = {
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 1},
        "requestPayload": {"lambdarun": 1, "lambdarun_covalent": {"task_id": "victim", "attempt": 1}, "result_url": url},
        "responsePayload": {"errorType": "Runtime.ExitError", "errorMessage": "forged"},
    }
    error, payload, _ = invoke(lam, record, function=FUNCTION)
    assert error == "Unhandled" and payload["errorType"] == "EventError"
    # a signed call of ANOTHER task does not make it valid either
    other = encode_call(caller, abs, (1,), meta={"task_id": "someone-else", "attempt": 1})
    record["requestPayload"]["call"] = base64.b64encode(other).decode()
    error, payload, _ = invoke(lam, record, function=FUNCTION)
    assert error == "Unhandled" and payload["errorType"] == "EventError"
    # nor does a result_url outside the prefix with the right call
    mine = encode_call(caller, abs, (1,), meta={"task_id": "victim", "attempt": 1})
    record["requestPayload"].update(call=base64.b64encode(mine).decode(), result_url=f"s3://{OTHER_BUCKET}/x")
    error, payload, _ = invoke(lam, record, function=FUNCTION)
    assert error == "Unhandled" and payload["errorType"] == "UntrustedLocationError"
    assert keys(s3, bucket, f"{base}/forged-record/") == [] and keys(s3, OTHER_BUCKET) == []
    # control: the genuine record (a signed call of that very task) is honoured
    record["requestPayload"]["result_url"] = url
    error, payload, _ = invoke(lam, record, function=FUNCTION)
    assert error is None and payload["recorded"] is True, json.dumps(payload)[:300]


def test_durable_event_cannot_choose_the_checkpoint_store(caller, lam, tmp_path):
    """The durable token names a store; the function only opens its configured one."""
    pytest.importorskip("lambdarun_durable")
    from lambdarun_durable.plugin import HANDLER_KEY
    from lambdarun_durable.state import encode_token

    evil = tmp_path / "elsewhere" / "durable.db"
    evil.parent.mkdir()
    marker = tmp_path / "marker"
    event = {
        "DurableExecutionArn": "arn:aws:lambda:us-east-1:123456789012:function:f/durable-execution/x/y",
        "CheckpointToken": encode_token(f"sqlite:///{evil}", 1, "inv"),
        HANDLER_KEY: base64.b64encode(legit_call(caller, marker)).decode(),
    }
    error, payload, _ = invoke(lam, event, function=FUNCTION)
    assert error == "Unhandled" and payload["errorType"] == "UntrustedLocationError"
    assert "checkpoint token names the store" in payload["errorMessage"]
    assert not evil.exists() and list(evil.parent.iterdir()) == []
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("call_url", "file:///etc/passwd"),
        ("call_url", f"s3://{OTHER_BUCKET}/call"),
        ("outcome_url", "file:///tmp/lambdarun-wire-victim"),
        ("outcome_url", f"s3://{OTHER_BUCKET}/outcome"),
    ],
)
def test_temporal_activity_cannot_choose_locations(caller, s3, tmp_path, field, url):
    """The Temporal activity takes call_url/outcome_url from the workflow input (anyone who
    can start workflows on the task queue): same rule, checked before anything runs."""
    pytest.importorskip("lambdarun_temporal")
    from lambdarun.errors import UntrustedLocationError
    from lambdarun_temporal.worker import make_call_activity

    marker = tmp_path / "marker"
    activity = make_call_activity(caller)
    envelope = b"" if field == "call_url" else legit_call(caller, marker)
    with pytest.raises(UntrustedLocationError, match=field):
        activity(envelope, **{field: url})
    assert not marker.exists()
    assert keys(s3, OTHER_BUCKET) == []
