"""At most one run per call attempt (lambdarun.claims), Storage.create, remote control flow,
and botocore's Invoke retries (only when nothing can have run)."""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import os
import stat
import secrets
import sys
import threading
import time
import uuid

import cloudpickle
import pytest

from lambdarun.calls import decode_outcome as _decode_outcome, encode_call, execute_call
from lambdarun.claims import CLAIMS_PREFIX, ClaimStore
from lambdarun.envelope import ISSUED, Envelope, pack, unpack
from lambdarun.errors import (
    EnvelopeExpiredError,
    AttemptCompletedError,
    AttemptInProgressError,
    InvocationOutcomeUnknownError,
    RemoteControlFlowError,
    RemoteGeneratorExit,
    RemoteKeyboardInterrupt,
    RemoteSystemExit,
    StorageError,
    ThrottledError,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

def decode_outcome(session, data, **kwargs):
    """The outcome bound to the task and attempt it names (these tests are about claims; the
    binding of outcomes to the call that is waited for is tested in tests/security)."""
    meta = unpack(data, session.signing_key).meta  # verified here as decode_outcome does
    return _decode_outcome(session, data, task_id=meta.get("task_id"), attempt=meta.get("attempt"), **kwargs)


#: a fixed issue time for calls whose claim is looked up by hour (fresh: envelopes expire)
ISSUED_AT = int(time.time())



def append(path, seconds=0.0, value="done"):
    with open(path, "a") as fh:
        fh.write("run\n")
    time.sleep(seconds)
    return value


def runs(path):
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def session(lambdarun_session, tmp_path):
    return lambdarun_session(overrides={"claims_url": (tmp_path / "claims").as_uri()})


# --- Storage.create ----------------------------------------------------------------------


def test_file_create_is_atomic_and_exclusive(lambdarun_session, tmp_path):
    session = lambdarun_session()
    storage = session.storage((tmp_path / "blobs").as_uri())
    payloads = [f"writer {i} ".encode() * 1000 for i in range(16)]
    barrier = threading.Barrier(16)

    def create(data):
        barrier.wait()
        return storage.create("claims/one", data)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        won = list(pool.map(create, payloads))
    assert won.count(True) == 1
    assert storage.get("claims/one") == payloads[won.index(True)]  # complete, never torn
    assert storage.list("claims/") == ["claims/one"]  # no temporary files left behind
    assert stat.S_IMODE(os.stat(tmp_path / "blobs" / "claims" / "one").st_mode) == 0o600
    assert storage.create("claims/one", b"again") is False
    assert storage.get("claims/one") == payloads[won.index(True)]


def test_s3_create_is_a_conditional_put_on_moto(aws_session):
    bucket = f"lr-claims-{uuid.uuid4().hex[:8]}"
    aws_session.target.client("s3").create_bucket(Bucket=bucket)
    storage = aws_session.storage(f"s3://{bucket}/p")
    assert storage.create("k", b"first") is True
    assert storage.create("k", b"second") is False
    assert storage.get("k") == b"first"


# --- the claim store -----------------------------------------------------------------------


def test_claim_record_lifecycle(session, tmp_path):
    store = ClaimStore(session.storage((tmp_path / "c").as_uri()), ttl=60)
    assert store.claim("t1", 1, request_id="r1") is None
    again = store.claim("t1", 1, request_id="r2")
    assert again.state == "claimed" and again.request_id == "r1"
    assert store.claim("t1", 2) is None  # a new attempt is a new claim
    store.complete("t1", 1, b"OUTCOME", request_id="r1")
    record, body = store.read("t1", 1)
    assert record.state == "completed" and body == b"OUTCOME"
    store.release("t1", 1)
    record, body = store.read("t1", 1)
    assert record.state == "released" and body is None
    assert store.claim("t1", 1) is not None  # a released attempt is still never run again
    assert store.sweep(now=time.time()) == 0
    assert store.sweep(now=time.time() + 61) == 3  # t1-1 and its tombstone, t1-2
    assert store.storage.list(CLAIMS_PREFIX + "/") == []


class _CountingStorage:
    """A FileStorage that counts delete requests and can be made to fail them."""

    def __init__(self, inner):
        self.inner, self.url = inner, inner.url
        self.delete_calls: list[list[str]] = []
        self.fail_deletes = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def delete(self, keys):
        keys = list(keys)
        self.delete_calls.append(keys)
        if self.fail_deletes:
            raise StorageError("injected delete failure")
        self.inner.delete(keys)


def test_release_many_tombstones_each_and_deletes_outcomes_in_one_request(session, tmp_path):
    storage = _CountingStorage(session.storage((tmp_path / "c").as_uri()))
    store = ClaimStore(storage, ttl=60)
    ids = [f"t{i}" for i in range(5)]
    for task in ids:
        assert store.claim(task, 1, request_id="r") is None
        store.complete(task, 1, b"OUTCOME-" + task.encode(), request_id="r")
    store.release_many([(task, 1, None) for task in ids])
    assert len(storage.delete_calls) == 1 and len(storage.delete_calls[0]) == 5
    for task in ids:
        record, body = store.read(task, 1)
        assert record.state == "released" and body is None
        assert store.claim(task, 1) is not None  # still never run again


def test_releaser_releases_off_the_calling_thread_in_batches(session, tmp_path):
    from lambdarun.claim_release import Releaser

    storage = _CountingStorage(session.storage((tmp_path / "c").as_uri()))
    store = ClaimStore(storage, ttl=60)
    releaser = Releaser(store)
    ids = [f"t{i}" for i in range(300)]
    for task in ids:
        assert store.claim(task, 1) is None
        store.complete(task, 1, b"OUTCOME", request_id="r")
    caller = threading.get_ident()
    seen_threads = set()
    original = store.release_many

    def spy(batch):
        seen_threads.add(threading.get_ident())
        return original(batch)

    store.release_many = spy
    for task in ids:
        releaser.put(task, 1)
    assert releaser.flush(timeout=60)
    assert releaser.pending() == 0
    assert caller not in seen_threads
    assert sum(len(c) for c in storage.delete_calls) == 300
    assert len(storage.delete_calls) < 300  # batched: what queued meanwhile goes together
    assert all(store.read(task, 1)[0].state == "released" for task in ids)


def test_releaser_survives_a_failed_batch_and_keeps_the_tombstones(session, tmp_path):
    from lambdarun.claim_release import Releaser

    storage = _CountingStorage(session.storage((tmp_path / "c").as_uri()))
    store = ClaimStore(storage, ttl=60)
    releaser = Releaser(store)
    assert store.claim("a", 1) is None
    store.complete("a", 1, b"OUTCOME", request_id="r")
    storage.fail_deletes = True
    releaser.put("a", 1)
    assert releaser.flush(timeout=60)  # handled (logged), not stuck
    assert store.claim("a", 1) is not None  # the tombstone was written: never runs again
    storage.fail_deletes = False
    assert store.claim("b", 1) is None
    store.complete("b", 1, b"OUTCOME", request_id="r")
    releaser.put("b", 1)  # the thread goes on after a failed batch
    assert releaser.flush(timeout=60)
    assert store.read("b", 1)[0].state == "released"


def test_dated_claims_are_swept_by_the_hour(session, tmp_path):
    store = ClaimStore(session.storage((tmp_path / "c").as_uri()), ttl=60)
    old, new = time.time() - 3 * 3600, time.time()
    for task, issued in (("old", old), ("new", new)):
        assert store.claim(task, 1, issued_at=issued) is None
        store.complete(task, 1, b"OUT", issued_at=issued)
    assert store.key("old", 1, old).split("/")[1] == time.strftime("%Y%m%d%H", time.gmtime(old))
    assert store.sweep() == 2  # old's claim and outcome; the current hour is kept
    assert store.read("old", 1, issued_at=old) is None
    assert store.read("new", 1, issued_at=new)[1] == b"OUT"
    with pytest.raises(StorageError, match="issue time"):
        store.key("x", 1, "yesterday")


def test_tampered_stored_outcome_is_refused(session, tmp_path):
    store = ClaimStore(session.storage((tmp_path / "c").as_uri()))
    store.claim("t", 1)
    store.complete("t", 1, b"GOOD")
    key = store.key("t", 1) + ".outcome"  # an undated claim (no issued_at)
    store.storage.put(key, store.storage.get(key).replace(b"GOOD", b"EVIL"))
    with pytest.raises(StorageError, match="digest"):
        store.read("t", 1)


@pytest.mark.parametrize("task_id", ["../../etc/x", "a/b", "", "x" * 300, 7])
def test_forged_task_id_is_refused_and_nothing_runs(session, tmp_path, task_id):
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker),), meta={"task_id": task_id})
    outcome = decode_outcome(session, execute_call(session, data, tee=False))
    assert isinstance(outcome.exception, StorageError)
    assert runs(marker) == []
    assert not (tmp_path / "etc").exists()


# --- execute_call: a second delivery never runs ------------------------------------------------


def test_replayed_envelope_runs_once_and_gets_the_first_outcome(session, tmp_path):
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker),), task_id="replayed")
    first = execute_call(session, data, tee=False)
    second = execute_call(session, data, tee=False)
    assert decode_outcome(session, first).value == "done"
    assert second == first
    assert runs(marker) == ["run"]


def test_every_call_carries_a_task_id_and_attempt(session, tmp_path):
    a = encode_call(session, append, (str(tmp_path / "a"),))
    b = encode_call(session, append, (str(tmp_path / "a"),))
    outcome_a = decode_outcome(session, execute_call(session, a, tee=False))
    outcome_b = decode_outcome(session, execute_call(session, b, tee=False))
    assert outcome_a.meta["attempt"] == outcome_b.meta["attempt"] == 1
    assert outcome_a.meta["task_id"] != outcome_b.meta["task_id"]  # two calls, two runs
    assert runs(tmp_path / "a") == ["run", "run"]


def test_new_attempt_of_a_task_runs_again(session, tmp_path):
    marker = tmp_path / "runs"
    for attempt in (1, 2):
        data = encode_call(session, append, (str(marker),), task_id="t", attempt=attempt)
        assert decode_outcome(session, execute_call(session, data, tee=False)).meta["attempt"] == attempt
    assert runs(marker) == ["run", "run"]


def test_concurrent_duplicate_waits_for_the_first_or_reports_in_progress(session, tmp_path):
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker), 1.5), task_id="concurrent")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(execute_call, session, data, tee=False)
        deadline = time.monotonic() + 30
        while not runs(marker):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # no time to wait: an in-progress answer at once, naming the attempt
        busy = decode_outcome(session, execute_call(session, data, tee=False))
        assert isinstance(busy.exception, AttemptInProgressError)
        assert busy.meta["task_id"] == "concurrent" and busy.meta["duplicate"] is True
        # enough time: the first delivery's outcome
        waited = execute_call(session, data, tee=False, deadline=time.monotonic() + 30)
        assert waited == first.result(timeout=30)
    assert runs(marker) == ["run"]


def test_lambda_retry_of_the_same_request_is_a_new_attempt_recorded_as_such(session, tmp_path):
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker),), task_id="lambda-retry", issued_at=ISSUED_AT)
    store = ClaimStore(session.storage((tmp_path / "claims").as_uri()))
    assert store.claim("lambda-retry", 1, request_id="req-1", issued_at=ISSUED_AT) is None  # it then died
    retry = execute_call(session, data, tee=False, request_id="req-1", deadline=time.monotonic() + 30)
    outcome = decode_outcome(session, retry)
    assert outcome.value == "done" and outcome.meta["lambda_retry"] == 1 and outcome.meta["attempt"] == 1
    assert store.read("lambda-retry", 1, issued_at=ISSUED_AT, retry=1)[1] == retry
    # a duplicate of that request under another request id is still a duplicate, not a run
    again = decode_outcome(session, execute_call(session, data, tee=False, request_id="req-2"))
    assert isinstance(again.exception, AttemptInProgressError)  # the first delivery never finished
    assert runs(marker) == ["run"]


def test_late_duplicate_after_release_is_refused(session, tmp_path):
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker),), task_id="late", issued_at=ISSUED_AT)
    execute_call(session, data, tee=False)
    ClaimStore(session.storage((tmp_path / "claims").as_uri())).release("late", 1, issued_at=ISSUED_AT)
    outcome = decode_outcome(session, execute_call(session, data, tee=False))
    assert isinstance(outcome.exception, AttemptCompletedError)
    assert runs(marker) == ["run"]


def test_no_claim_store_configured_runs_unclaimed(lambdarun_session, tmp_path):
    session = lambdarun_session()  # Lambda side without claims_url or storage_url
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker),), task_id="unclaimed")
    assert decode_outcome(session, execute_call(session, data, tee=False)).value == "done"
    assert runs(marker) == ["run"]


# --- remote control flow ----------------------------------------------------------------------


def do_exit(code):
    sys.exit(code)


def do_interrupt():
    raise KeyboardInterrupt("stop")


def do_generator_exit():
    raise GeneratorExit()


def test_remote_system_exit_is_an_ordinary_error_with_its_code(session):
    outcome = decode_outcome(session, execute_call(session, encode_call(session, do_exit, (3,)), tee=False))
    exc = outcome.exception
    assert isinstance(exc, RemoteSystemExit) and isinstance(exc, Exception)
    assert exc.code == 3 and exc.original_type == "builtins.SystemExit"
    assert "do_exit" in exc.remote_traceback
    assert outcome.meta["exc_type"] == "builtins.SystemExit"
    with pytest.raises(RemoteSystemExit):
        outcome.unwrap()


@pytest.mark.parametrize(("func", "kind", "original"), [
    (do_interrupt, RemoteKeyboardInterrupt, "builtins.KeyboardInterrupt"),
    (do_generator_exit, RemoteGeneratorExit, "builtins.GeneratorExit"),
])
def test_remote_interrupts_stay_remote(session, func, kind, original):
    exc = decode_outcome(session, execute_call(session, encode_call(session, func), tee=False)).exception
    assert isinstance(exc, kind) and isinstance(exc, RemoteControlFlowError)
    assert exc.original_type == original


def test_a_raw_control_flow_exception_from_an_older_runtime_is_converted_by_the_caller(session):
    envelope = Envelope(kind="outcome", parts=(session.encode(SystemExit(4)),),
                        meta={"ok": False, "exc_type": "builtins.SystemExit", "exc_message": "4",
                              "traceback": "tb"})
    exc = decode_outcome(session, pack(envelope, session.signing_key)).exception
    assert isinstance(exc, RemoteSystemExit) and exc.code == 4


def maybe_exit(i):
    if i == 1:
        sys.exit(9)
    return i


def test_map_returns_a_remote_exit_in_place_and_finishes_the_others(inprocess_session, tmp_path):
    import lambdarun

    results = list(lambdarun.map(maybe_exit, range(4), return_exceptions=True, session=inprocess_session))
    assert results[0] == 0 and results[2:] == [2, 3]
    assert isinstance(results[1], RemoteSystemExit) and results[1].code == 9


# --- botocore retries of Invoke ----------------------------------------------------------------


class _Lambda(http.server.BaseHTTPRequestHandler):
    """A Lambda Invoke endpoint that misbehaves as ``server.plan`` says, request by request."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.do_POST()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1
        action = self.server.plan.pop(0) if self.server.plan else "ok"
        if action == "close":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if action == "429":
            body = json.dumps({"message": "Rate exceeded", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"})
            self._send(429, body, {"x-amzn-ErrorType": "TooManyRequestsException"})
        elif action == "500":
            self._send(500, json.dumps({"message": "boom"}), {"x-amzn-ErrorType": "ServiceException"})
        else:
            self._send(200, json.dumps({"ok": True}), {})

    def _send(self, status, body, headers):
        data = body.encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_lambda(lambdarun_session, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Lambda)
    server.requests, server.plan = 0, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    session = lambdarun_session(overrides={
        "target": "aws", "aws": {"lambda_endpoint_url": f"http://127.0.0.1:{server.server_port}", "max_attempts": 2},
    })
    try:
        yield session, server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_throttled_invoke_is_retried(fake_lambda):
    session, server = fake_lambda
    server.plan = ["429", "429"]
    response = session.invoker.invoke("f", b"{}")
    assert response.status_code == 200 and server.requests == 3


def test_always_throttled_invoke_is_a_throttled_error_after_max_attempts(fake_lambda):
    session, server = fake_lambda
    server.plan = ["429"] * 10
    with pytest.raises(ThrottledError):
        session.invoker.invoke("f", b"{}")
    assert server.requests == 3  # the first request and max_attempts (2) retries


@pytest.mark.parametrize("action", ["close", "500"])
def test_invoke_whose_answer_is_lost_is_never_resent(fake_lambda, action):
    session, server = fake_lambda
    server.plan = [action]
    with pytest.raises(Exception) as info:
        session.invoker.invoke("f", b"{}")
    assert server.requests == 1  # botocore did not re-send it
    if action == "close":
        assert isinstance(info.value, InvocationOutcomeUnknownError)


def test_other_lambda_operations_keep_standard_retries(fake_lambda):
    session, server = fake_lambda
    server.plan = ["close"]
    lam = session.target.client("lambda")
    lam.list_functions()  # a GET: the standard mode re-sends it after the dropped connection
    assert server.requests == 2


def test_runner_numbered_attempts_are_claimed_as_new_attempts(session, tmp_path):
    """A runner that retries the same envelope (Temporal: the activity attempt) passes its
    own attempt number: each retry is a new attempt; the same number stays one run."""
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker),), task_id="activity")
    for attempt in (1, 2, 2):
        assert decode_outcome(session, execute_call(session, data, tee=False, attempt=attempt)).value == "done"
    assert runs(marker) == ["run", "run"]


def test_malformed_claim_record_blocks_the_attempt_and_nothing_runs(session, tmp_path):
    marker = tmp_path / "runs"
    store = ClaimStore(session.storage((tmp_path / "claims").as_uri()))
    data = encode_call(session, append, (str(marker),), task_id="planted", issued_at=ISSUED_AT)
    store.storage.put(store.key("planted", 1, ISSUED_AT), b"\x00not json at all")
    outcome = decode_outcome(session, execute_call(session, data, tee=False, deadline=time.monotonic() + 5))
    assert isinstance(outcome.exception, StorageError) and "unreadable claim record" in str(outcome.exception)
    assert runs(marker) == []


def test_planted_outcome_signed_with_another_key_is_refused(lambdarun_session, tmp_path):
    """Someone who can write the claim store plants a 'completed' outcome for an attempt: the
    duplicate delivery hands it back, and the caller refuses it (not signed with its key)."""
    from lambdarun.calls import pack_failure
    from lambdarun.errors import EnvelopeSignatureError

    claims = {"claims_url": (tmp_path / "claims").as_uri()}
    session = lambdarun_session(overrides={**claims, "signing_key": "k" * 32})
    forger = lambdarun_session(overrides={**claims, "signing_key": "f" * 32})
    marker = tmp_path / "runs"
    store = ClaimStore(session.storage((tmp_path / "claims").as_uri()))
    store.claim("victim", 1, issued_at=ISSUED_AT)
    store.complete("victim", 1, pack_failure(forger, ValueError("forged"), meta={"task_id": "victim", "attempt": 1}),
                   issued_at=ISSUED_AT)
    data = encode_call(session, append, (str(marker),), task_id="victim", issued_at=ISSUED_AT)
    with pytest.raises(EnvelopeSignatureError):
        decode_outcome(session, execute_call(session, data, tee=False))
    assert runs(marker) == []


@pytest.mark.parametrize("issued_at", ["../../x", -5, 1e20, True])
def test_forged_issue_time_is_refused_and_nothing_runs(session, tmp_path, issued_at):
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker),), meta={ISSUED: issued_at})
    outcome = decode_outcome(session, execute_call(session, data, tee=False))
    # the claim is filed by the envelope's signed issue time, which the envelope checks first
    assert isinstance(outcome.exception, EnvelopeExpiredError) and "issue" in str(outcome.exception)
    assert runs(marker) == []


def test_claims_in_s3_on_moto_run_a_replayed_call_once(lambdarun_session, moto_endpoint, monkeypatch, tmp_path):
    """The aws target's default: claims next to the scratch storage in S3 (conditional PutObject)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = f"lr-claims-{uuid.uuid4().hex[:8]}"
    session = lambdarun_session(overrides={"target": "aws", "aws": {"endpoint_url": moto_endpoint},
                                           "storage_url": f"s3://{bucket}/lambdarun",
                                           "signing_key": secrets.token_urlsafe(32)})
    session.target.client("s3").create_bucket(Bucket=bucket)
    marker = tmp_path / "runs"
    data = encode_call(session, append, (str(marker),), task_id="s3-claimed")
    first = execute_call(session, data, tee=False)
    assert execute_call(session, data, tee=False) == first
    assert runs(marker) == ["run"]
    keys = session.storage(f"s3://{bucket}/lambdarun").list(CLAIMS_PREFIX + "/")
    assert len(keys) == 2 and keys[0].endswith("/s3-claimed-1")  # the claim and its outcome
