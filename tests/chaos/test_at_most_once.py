"""At most one run per call attempt, with faults injected between the caller and Lambda
(issue 14): a dropped connection, a replayed envelope, a concurrent duplicate, a killed
environment. Every test counts the runs in a side-effect file the function appends to."""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import pytest

import lambdarun
from lambdarun.calls import decode_outcome as _decode_outcome, encode_call
from lambdarun.envelope import unpack
from lambdarun.errors import AttemptInProgressError, RemoteEnvironmentError
from lambdarun.testing import wait_for

# the functions below travel by value (this test module is not importable in Lambda)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def decode_outcome(session, data, **kwargs):
    """The outcome bound to the task and attempt it names (these tests are about claims; the
    binding of outcomes to the call that is waited for is tested in tests/security)."""
    meta = unpack(data, session.signing_key).meta  # verified here as decode_outcome does
    return _decode_outcome(session, data, task_id=meta.get("task_id"), attempt=meta.get("attempt"), **kwargs)



def append_and_sleep(path: str, seconds: float) -> str:
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return "done"


def runs(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_connection_dropped_during_sync_invoke_runs_the_body_once(proxied, names, invocation_log, tmp_path):
    session, proxy = proxied
    marker = tmp_path / "runs"
    since = invocation_log.mark(names.FUNCTION)
    proxy.drop_next(after=1.0)
    future = lambdarun.submit(append_and_sleep, str(marker), 2.0, session=session)
    assert future.result(timeout=60) == "done"
    assert proxy.drops == 1  # the fault did happen: the first answer was lost
    # every delivery of the call (the first, whose answer was lost, and the retries) finished:
    # a second run would have appended before its invocation ended
    records = invocation_log.settled(names.FUNCTION, since)
    assert len(records) >= 2 and {r["status"] for r in records} == {"succeeded"}  # the retry was delivered
    assert len(runs(marker)) == 1


def _invoke(session, function: str, envelope: bytes) -> bytes:
    lam = session.target.client("lambda")
    event = {"lambdarun": 1, "call": base64.b64encode(envelope).decode("ascii")}
    response = lam.invoke(FunctionName=function, Payload=json.dumps(event).encode())
    assert "FunctionError" not in response, response["Payload"].read()
    return base64.b64decode(json.loads(response["Payload"].read())["outcome"])


def test_replayed_envelope_runs_once_and_the_replay_gets_the_first_outcome(session, names, tmp_path):
    marker = tmp_path / "runs"
    assert lambdarun.run(os.getpid, session=session)  # the function exists
    envelope = encode_call(session, append_and_sleep, (str(marker), 0.1), task_id=uuid.uuid4().hex)
    first = _invoke(session, names.FUNCTION, envelope)
    second = _invoke(session, names.FUNCTION, envelope)  # a replay of the same signed bytes
    assert decode_outcome(session, first).unwrap() == "done"
    assert second == first  # the stored outcome of the first delivery, byte for byte
    assert len(runs(marker)) == 1


def _short_function(session, SHORT_FUNCTION) -> None:
    """SHORT_FUNCTION: the runtime function with a 2 s timeout (created once)."""
    short = lambdarun.run(os.getpid, session=session.derive({"covalent": {"function_name": SHORT_FUNCTION}}))
    assert short > 0
    lam = session.target.client("lambda")
    if lam.get_function(FunctionName=SHORT_FUNCTION)["Configuration"]["Timeout"] != 2:
        lam.update_function_configuration(FunctionName=SHORT_FUNCTION, Timeout=2)


def test_concurrent_duplicate_gets_an_in_progress_answer(session, names, tmp_path):
    import concurrent.futures

    marker = tmp_path / "runs"
    assert lambdarun.run(os.getpid, session=session)
    _short_function(session, names.SHORT_FUNCTION)
    envelope = encode_call(session, append_and_sleep, (str(marker), 4.0), task_id=uuid.uuid4().hex)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(_invoke, session, names.FUNCTION, envelope)
        wait_for(lambda: len(runs(marker)) == 1, what="the first delivery to start")
        # the duplicate can wait ~1 s (2 s timeout less the answer margin): the first needs 4
        duplicate = decode_outcome(session, _invoke(session, names.SHORT_FUNCTION, envelope))
        assert not first.done()
        assert decode_outcome(session, first.result(timeout=60)).unwrap() == "done"
    assert isinstance(duplicate.exception, AttemptInProgressError)
    assert duplicate.meta.get("duplicate") is True
    assert len(runs(marker)) == 1


def test_killed_environment_mid_call_is_a_typed_error_and_never_a_second_run(session, names, environment_pids,
                                                                            invocation_log, tmp_path):
    marker = tmp_path / "runs"
    assert lambdarun.run(os.getpid, session=session)
    since = invocation_log.mark(names.FUNCTION)
    future = lambdarun.submit(append_and_sleep, str(marker), 30.0, session=session)
    wait_for(lambda: len(runs(marker)) == 1, what="the call to start")
    pid = int(runs(marker)[0])
    # found through the service's extension API: the environment's supervisor, whose child
    # (the runtime) ran the handler
    pids = environment_pids(names.FUNCTION)
    assert pid in pids or _parent_pid(pid) in pids
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RemoteEnvironmentError, match="environment"):
        future.result(timeout=60)
    # the killed delivery is recorded as crashed and no other delivery of the call is running
    # or queued: a second run would have appended before its invocation ended
    records = invocation_log.settled(names.FUNCTION, since)
    assert [r["status"] for r in records] == ["crashed"]
    assert len(runs(marker)) == 1


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def exit_with(code):
    import sys

    sys.exit(code)


def interrupt():
    raise KeyboardInterrupt("remote ^C")


def generator_exit():
    raise GeneratorExit()


def maybe_exit(i):
    if i == 2:
        import sys

        sys.exit(7)
    return i * 10


def test_remote_control_flow_stays_remote(session):
    from lambdarun.errors import (
        RemoteControlFlowError,
        RemoteGeneratorExit,
        RemoteKeyboardInterrupt,
        RemoteSystemExit,
    )

    with pytest.raises(RemoteSystemExit) as info:
        lambdarun.run(exit_with, 3, session=session)
    assert info.value.code == 3 and info.value.original_type == "builtins.SystemExit"
    assert "exit_with" in info.value.remote_traceback
    with pytest.raises(RemoteKeyboardInterrupt, match="remote \\^C") as info:
        lambdarun.run(interrupt, session=session)
    assert info.value.original_type == "builtins.KeyboardInterrupt"
    assert "did not raise" not in str(info.value)
    with pytest.raises(RemoteGeneratorExit):
        lambdarun.run(generator_exit, session=session)
    # all of them are ordinary exceptions here
    assert issubclass(RemoteControlFlowError, Exception)


def test_map_with_return_exceptions_returns_a_remote_exit_and_the_other_results(session):
    from lambdarun.errors import RemoteSystemExit

    results = list(lambdarun.map(maybe_exit, range(5), return_exceptions=True, session=session))
    assert [r for i, r in enumerate(results) if i != 2] == [0, 10, 30, 40]
    assert isinstance(results[2], RemoteSystemExit) and results[2].code == 7


def test_first_call_timeout_runs_from_the_invoke(make_session):
    """A new function on a new backend: its creation is reported apart
    (``info["prepare_seconds"]``) and not charged; the typed error comes within timeout + 1 s
    of the deadline's start (the invoke), never before the timeout."""
    from lambdarun.errors import TaskTimeoutError

    session = make_session(timeout=2, function_name=f"lambdarun-chaos-first-{uuid.uuid4().hex[:6]}")
    future = lambdarun.submit(time.sleep, 30, session=session)
    done_at: list[float] = []
    future.add_done_callback(lambda _f: done_at.append(time.monotonic()))
    with pytest.raises(TaskTimeoutError, match="timeout of 2 s"):
        future.result(timeout=60)
    wait_for(lambda: bool(done_at), what="the done callback")
    assert future.info["prepare_seconds"] > 0  # the function was created first, outside the deadline
    elapsed = done_at[0] - future.info["deadline_started"]
    assert 2.0 <= elapsed <= 3.0, elapsed


def append_and_die_once(path: str) -> str:
    first = not os.path.exists(path)
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    if first:
        os._exit(1)  # the environment dies mid-call: Lambda retries the Event (same request id)
    return "second run"


def test_lambda_retry_of_an_event_whose_environment_died_is_a_new_attempt(session, tmp_path):
    marker = tmp_path / "runs"
    name = "lambdarun-chaos-retry"
    assert lambdarun.run(os.getpid, session=session.derive({"covalent": {"function_name": name}})) > 0
    lam = session.target.client("lambda")
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    storage = session.storage(session.target.default_storage_url())
    key = f"chaos/{uuid.uuid4().hex}/outcome"
    envelope = encode_call(session, append_and_die_once, (str(marker),), task_id=uuid.uuid4().hex)
    event = {"lambdarun": 1, "call": base64.b64encode(envelope).decode("ascii"),
             "result_url": storage.url_for(key), "always_store": True}
    assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(event).encode())["StatusCode"] == 202
    wait_for(lambda: storage.exists(key), what="the retry's outcome")
    outcome = decode_outcome(session, storage.get(key))
    storage.delete([key])
    assert outcome.value == "second run"
    assert outcome.meta["lambda_retry"] == 1 and outcome.meta["attempt"] == 1  # recorded as Lambda's retry
    assert len(runs(marker)) == 2


def test_local_claims_are_private_to_the_user(session, tmp_path):
    marker = tmp_path / "runs"
    task = uuid.uuid4().hex
    assert lambdarun.run(os.getpid, session=session)
    envelope = encode_call(session, append_and_sleep, (str(marker), 0.0), task_id=task)
    _invoke(session, "lambdarun-chaos", envelope)
    root = Path(session.target.claims_url().removeprefix("file://"))
    assert (root.stat().st_mode & 0o777) == 0o700
    records = [p for p in root.rglob(f"{task}-1*")]
    assert records and all((p.stat().st_mode & 0o777) == 0o600 for p in records)


def test_covalent_releases_each_claim_after_its_result(session):
    """The caller releases a finished attempt's claim (a tombstone, the outcome copy deleted)
    from the claim releaser's thread, in batches: every task ends released."""
    results = []
    tasks = []
    for value in (-1, -2, -3, -4, -5):
        fut = lambdarun.submit(abs, value, backend="covalent", session=session)
        tasks.append(fut.task_id)
        results.append(fut)
    assert [f.result(timeout=120) for f in results] == [1, 2, 3, 4, 5]
    root = Path(session.target.claims_url().removeprefix("file://"))

    def released() -> bool:
        for task in tasks:
            if not list(root.rglob(f"{task}-1.released")) or list(root.rglob(f"{task}-1.outcome")):
                return False
        return True

    wait_for(released, what="every task's claim released (tombstone written, outcome deleted)", timeout=60)
