"""The covalent backend on the real local target (local Lambda service + moto's S3)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import sys
import time
import uuid

import cloudpickle
import pytest

import lambdarun
from lambdarun.calls import execute_call
from lambdarun.errors import (
    EnvelopeError,
    RemoteEnvironmentError,
    RemoteExecutionError,
    TaskTimeoutError,
)
from lambdarun_covalent.backend import CovalentBackend

# the Lambda side cannot import this module (pytest imports it by path): ship it by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MB = 1024 * 1024


class ProjectError(ValueError):
    """An exception type of the user's own."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self):
        return (type(self), (self.args[0], self.code))


def double(x):
    return x * 2


def fail(code):
    print("about to fail")
    raise ProjectError("the task failed on purpose", code)


def chatty(n):
    print(f"out {n}")
    print(f"err {n}", file=sys.stderr)
    return n


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fresh():
    return uuid.uuid4().hex


def digest_and_grow(blob):
    return hashlib.sha256(blob).hexdigest(), blob + blob


def write_pid_and_sleep(path, seconds):
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return "survived"


def kill_own_process():
    os.kill(os.getpid(), signal.SIGKILL)


def test_backend_is_registered(session):
    assert isinstance(session.backend("covalent"), CovalentBackend)


def test_inline_round_trip_writes_nothing_to_storage(session, leftovers):
    assert lambdarun.run(double, 21, backend="covalent", session=session) == 42
    assert lambdarun.run(double, "ab", backend="covalent", session=session) == "abab"
    assert leftovers(session) == []


def test_10mb_argument_and_10mb_result_go_through_s3(make_session, leftovers):
    session = make_session(keep_objects=True)
    blob = os.urandom(5 * MB) * 2  # 10 MB
    future = lambdarun.submit(digest_and_grow, blob, backend="covalent", session=session)
    digest, grown = future.result(timeout=60)
    assert digest == hashlib.sha256(blob).hexdigest()
    assert grown == blob + blob
    # with keep_objects the attempt's call and outcome objects are still there: both spilled
    attempt = future.info["task"].attempt
    kept = sorted(leftovers(session))
    assert kept == [attempt.prefix + "call", attempt.prefix + "outcome"]
    storage = session.storage()
    assert len(storage.get(attempt.prefix + "call")) > 10 * MB
    storage.delete(kept)


def test_large_payloads_leave_no_objects(session, leftovers):
    blob = b"x" * (3 * MB)
    digest, grown = lambdarun.run(digest_and_grow, blob, backend="covalent", session=session)
    assert digest == hashlib.sha256(blob).hexdigest() and len(grown) == 6 * MB
    assert leftovers(session) == []


def test_original_exception_type_with_remote_traceback(session, leftovers):
    future = lambdarun.submit(fail, 7, backend="covalent", session=session)
    with pytest.raises(ProjectError, match="failed on purpose") as info:
        future.result(timeout=30)
    assert info.value.code == 7
    assert "in fail" in info.value.remote_traceback
    assert "ProjectError: the task failed on purpose" in future.remote_traceback
    assert future.stdout == "about to fail\n"
    assert leftovers(session) == []


def test_failure_with_large_argument_leaves_no_objects(session, leftovers):
    def fail_big(blob):
        raise ProjectError(f"got {len(blob)} bytes", 1)

    with pytest.raises(ProjectError, match=f"got {MB} bytes"):
        lambdarun.run(fail_big, b"y" * MB, backend="covalent", session=session)
    assert leftovers(session) == []


def test_stdout_and_stderr_on_the_future(session):
    future = lambdarun.submit(chatty, 3, backend="covalent", session=session)
    assert future.result(timeout=30) == 3
    assert future.stdout == "out 3\n"
    assert future.stderr == "err 3\n"


def test_timeout_raises_task_timeout_error_within_timeout_plus_one_second(make_session, leftovers):
    session = make_session(timeout=1)
    future = lambdarun.submit(nap, 5, backend="covalent", session=session)
    done_at: list[float] = []
    future.add_done_callback(lambda _f: done_at.append(time.monotonic()))
    # resolved (with TaskTimeoutError) before timeout + 1 s from the invoke, not left waiting
    # on Lambda; preparing the function first (prepare_seconds) is not the task's time
    with pytest.raises(TaskTimeoutError, match="timeout of 1 s"):
        future.result(timeout=30)
    assert done_at and done_at[0] - future.info["deadline_started"] <= 2.0, future.info.get("prepare_seconds")


def test_async_mode_round_trip_and_cleanup(make_session, leftovers):
    session = make_session(mode="async")
    future = lambdarun.submit(chatty, 5, backend="covalent", session=session)
    assert future.result(timeout=30) == 5
    assert future.stdout == "out 5\n"
    assert future.info["task"].attempt.mode.value == "Event"
    blob = b"z" * (2 * MB)
    digest, grown = lambdarun.run(digest_and_grow, blob, backend="covalent", session=session)
    assert digest == hashlib.sha256(blob).hexdigest() and grown == blob * 2
    with pytest.raises(ProjectError):
        lambdarun.run(fail, 1, backend="covalent", session=session)
    assert leftovers(session) == []


def test_long_expected_duration_uses_async_invoke(make_session):
    session = make_session(expected_duration=120, async_threshold=60)
    future = lambdarun.submit(double, 4, backend="covalent", session=session)
    assert future.result(timeout=30) == 8
    assert future.info["task"].attempt.mode.value == "Event"


def test_rerun_gives_a_fresh_result(session):
    first = lambdarun.run(fresh, backend="covalent", session=session)
    second = lambdarun.run(fresh, backend="covalent", session=session)
    assert first != second


def test_cancel_running_task(session, leftovers):
    future = lambdarun.submit(nap, 3, backend="covalent", session=session)
    deadline = time.monotonic() + 10
    while not future.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert future.running()
    assert future.cancel()
    assert future.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=1)
    assert future.info["task"].status == "CANCELLED"


def wait_until_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cancel_running_task_kills_its_environment_on_the_local_target(make_session, tmp_path, leftovers,
                                                                       mode):
    session = make_session(mode=mode)
    pid_file = tmp_path / "pid"
    future = lambdarun.submit(write_pid_and_sleep, str(pid_file), 30, backend="covalent", session=session)
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    assert future.cancel()
    assert wait_until_gone(pid)  # the worker running the task was killed, not left to sleep 30 s
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=1)
    engine = session.backend("covalent").engine
    deadline = time.monotonic() + 15
    while (engine.watching() or leftovers(session)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.watching() == 0
    assert leftovers(session) == []


def test_cancel_pending_task_never_runs(make_session, tmp_path):
    session = make_session(max_workers=1)
    marker = tmp_path / "ran"

    def touch(path):
        open(path, "w").close()

    blocker = lambdarun.submit(nap, 1, backend="covalent", session=session)
    pending = lambdarun.submit(touch, str(marker), backend="covalent", session=session)
    assert not pending.running()
    assert pending.cancel()
    assert blocker.result(timeout=30) == 1
    follow_up = lambdarun.submit(double, 1, backend="covalent", session=session)
    assert follow_up.result(timeout=30) == 2  # the single worker went past the cancelled task
    assert pending.cancelled() and not marker.exists()


def test_killed_environment_fails_clearly(session, tmp_path, leftovers):
    pid_file = tmp_path / "pid"
    future = lambdarun.submit(write_pid_and_sleep, str(pid_file), 30, backend="covalent", session=session)
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    with pytest.raises(RemoteEnvironmentError, match="execution environment died") as info:
        future.result(timeout=10)
    assert info.value.original_type == "Runtime.ExitError"
    assert leftovers(session) == []


def test_killed_environment_of_an_async_task_fails_clearly(make_session, tmp_path, leftovers):
    """Event invocations have no response: the function is its own on-failure destination,
    which turns Lambda's failure record into the task's outcome."""
    session = make_session(mode="async")
    pid_file = tmp_path / "pid"
    future = lambdarun.submit(write_pid_and_sleep, str(pid_file), 30, backend="covalent", session=session)
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    with pytest.raises(RemoteEnvironmentError, match="execution environment died") as info:
        future.result(timeout=15)
    assert info.value.original_type == "Runtime.ExitError"
    assert leftovers(session) == []


def test_async_environment_failure_is_retried_when_configured(make_session, tmp_path):
    session = make_session(mode="async", retries=1)
    flag = tmp_path / "crashed-once"

    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "second attempt"

    future = lambdarun.submit(crash_once, str(flag), backend="covalent", session=session)
    assert future.result(timeout=30) == "second attempt"
    assert future.info["task"].attempt.number == 2


def test_task_killing_its_own_process_fails_clearly(session):
    with pytest.raises(RemoteEnvironmentError, match="Runtime.ExitError"):
        lambdarun.run(kill_own_process, backend="covalent", session=session)


def test_environment_failure_is_retried_when_configured(make_session, tmp_path):
    session = make_session(retries=1)
    flag = tmp_path / "crashed-once"

    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "second attempt"

    future = lambdarun.submit(crash_once, str(flag), backend="covalent", session=session)
    assert future.result(timeout=30) == "second attempt"
    assert future.info["task"].attempt.number == 2


def test_map_keeps_order_and_reports_exceptions(session, leftovers):
    assert list(lambdarun.map(double, range(50), backend="covalent", session=session)) == [
        x * 2 for x in range(50)
    ]

    def maybe_fail(x):
        if x == 3:
            raise ProjectError("three", 3)
        return x

    results = list(
        lambdarun.map(maybe_fail, range(6), backend="covalent", session=session, return_exceptions=True)
    )
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
    assert isinstance(results[3], ProjectError)
    assert leftovers(session) == []


def test_outcome_of_another_attempt_is_refused(session):
    """Results are verified against the task id and attempt they were requested for."""
    backend = session.backend("covalent")
    other = backend.submit(double, (1,), {})
    other.result(timeout=30)
    attempt = other.info["task"].attempt
    from lambdarun.calls import encode_call

    stale = execute_call(
        session, encode_call(session, double, (5,), {}, meta={"task_id": "an-old-run", "attempt": 1}), tee=False
    )
    with pytest.raises(EnvelopeError, match="stale or foreign"):
        backend._decode(attempt, stale)


def test_signed_envelopes_round_trip(make_session):
    session = make_session(core={"signing_key": "covalent-test-signing-key-0123456789abcd"}, function_name="lambdarun-covalent-signed")
    assert lambdarun.run(double, 5, backend="covalent", session=session) == 10


def finish_late(path, seconds):
    time.sleep(seconds)
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()} {time.time()}\n")
    return seconds


def test_close_cancels_unfinished_tasks_and_late_outcomes_are_deleted(make_session, leftovers, tmp_path,
                                                                      monkeypatch):
    session = make_session(mode="async")
    # a target that cannot stop an invocation (like aws): the cancelled one runs on
    monkeypatch.setattr(session.target, "stop_invocation", lambda function_name, marker: False)
    marker = tmp_path / "finished"
    future = lambdarun.submit(finish_late, str(marker), 1, backend="covalent", session=session)
    task = future.info["task"]
    deadline = time.monotonic() + 10
    while not (task.attempt and task.attempt.invoked) and time.monotonic() < deadline:
        time.sleep(0.01)
    backend = session.backend("covalent")
    engine = backend.engine
    backend.close()
    assert future.cancelled()
    # the cancelled asynchronous invocation still finishes on Lambda and stores its outcome;
    # the backend keeps watching for it and deletes it
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists()
    while (engine.watching() or leftovers(session)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.watching() == 0
    assert leftovers(session) == []


def test_per_call_options(session, leftovers):
    future = lambdarun.submit(
        chatty, 9, backend="covalent", session=session, options={"covalent": {"mode": "async", "timeout": 30}}
    )
    assert future.result(timeout=30) == 9
    task = future.info["task"]
    assert task.mode.value == "Event" and task.timeout == 30
    assert leftovers(session) == []


def test_async_task_timeout(make_session):
    session = make_session(mode="async", timeout=1)
    future = lambdarun.submit(nap, 3, backend="covalent", session=session)
    done_at: list[float] = []
    future.add_done_callback(lambda _f: done_at.append(time.monotonic()))
    with pytest.raises(TaskTimeoutError, match="timeout of 1 s"):
        future.result(timeout=30)
    # within timeout + 1 s of the invoke (setting up the function first is not the task's time)
    assert done_at and done_at[0] - future.info["deadline_started"] <= 2.0, future.info.get("prepare_seconds")


def _rebuild_on_lambda_only(message):
    if "AWS_LAMBDA_FUNCTION_NAME" not in os.environ:
        raise ImportError("this exception type only loads inside the Lambda environment")
    return LambdaOnlyError(message)


class LambdaOnlyError(Exception):
    def __reduce__(self):
        return (_rebuild_on_lambda_only, (str(self),))


def raise_lambda_only():
    raise LambdaOnlyError("cannot be rebuilt by the caller")


def test_exception_that_cannot_be_rebuilt_locally_names_its_type(session):
    with pytest.raises(RemoteExecutionError) as info:
        lambdarun.run(raise_lambda_only, backend="covalent", session=session)
    assert info.value.original_type.endswith("LambdaOnlyError")
    assert "cannot be rebuilt by the caller" in str(info.value)
    assert "LambdaOnlyError" in info.value.remote_traceback


def test_unloadable_call_is_refused_with_a_typed_error(session, tmp_path, monkeypatch):
    """The function's module exists here but not on Lambda: the runtime refuses the envelope
    and the caller gets the typed error, not a hang or an opaque failure."""
    from lambdarun.errors import MissingModuleError

    session.backend("covalent").function_name  # noqa: B018 - function created before the module exists
    (tmp_path / "only_here_module.py").write_text("def answer():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here_module

    try:
        with pytest.raises(MissingModuleError, match="only_here_module"):
            lambdarun.run(only_here_module.answer, backend="covalent", session=session)
    finally:
        sys.modules.pop("only_here_module", None)


def test_custom_bucket_is_created_on_the_local_target(make_session, leftovers):
    """A bucket of the user's choosing (the original's s3_bucket_name) is created by the
    local target; calls and results over the inline limit go through it both ways."""
    session = make_session(s3_bucket_name="my-covalent-bucket", inline_limit=2048)
    assert lambdarun.run(len, b"x" * 300_000, backend="covalent", session=session) == 300_000
    assert lambdarun.run(bytes, 300_000, backend="covalent", session=session) == bytes(300_000)
    s3 = session.backend("covalent").runtime_session.target.client("s3")
    assert "my-covalent-bucket" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.list_objects_v2(Bucket="my-covalent-bucket").get("KeyCount", 0) == 0  # cleaned up


def test_unwritable_bucket_blames_the_bucket_not_the_runtime(make_session):
    """The bucket vanished under a running backend: a large result cannot be stored. The
    error says so (and what to do), instead of blaming the runtime function."""
    from lambdarun.errors import StorageError

    session = make_session(s3_bucket_name="vanishing-covalent-bucket", inline_limit=2048)
    assert lambdarun.run(len, b"x" * 10_000, backend="covalent", session=session) == 10_000  # bucket created
    s3 = session.backend("covalent").runtime_session.target.client("s3")
    s3.delete_bucket(Bucket="vanishing-covalent-bucket")
    with pytest.raises(StorageError, match="could not store its large result") as info:
        lambdarun.run(bytes, 10_000, backend="covalent", session=session)
    assert "NoSuchBucket" in str(info.value) and "vanishing-covalent-bucket" in str(info.value)
    assert "lambdarun.runtime.handler" not in str(info.value)


_REGION_RUN = """
import json, sys
import lambdarun
from lambdarun.local.plugin import stop_embedded_stacks
from lambdarun_covalent.executor import AWSLambdaExecutor

big = b"x" * 300_000  # over the 256 KiB inline limit: call and result go through the bucket
out = {"plain": lambdarun.run(bytes.upper, big) == big.upper()}
executor = AWSLambdaExecutor(function_name="lambdarun-covalent-region-tests", region=sys.argv[1],
                             s3_bucket_name="my-covalent-bucket-" + sys.argv[1])
out["executor"] = executor.run_sync(len, [big], {}) == len(big)
out["stack_region"] = executor.backend.runtime_session.target.stack.region
stop_embedded_stacks()
print(json.dumps(out))
"""


@pytest.mark.parametrize("region", ["eu-west-1", "ap-southeast-2"])
def test_tasks_run_in_any_region(region, tmp_path):
    """Outside us-east-1 every task used to fail (a bucket without its LocationConstraint):
    plain lambdarun.run and the executor (region argument, custom bucket), in a fresh
    process with its own embedded stack in that region."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDARUN_")}
    env.update(LAMBDARUN_TARGET="local", LAMBDARUN_REGION=region, LAMBDARUN_LOCAL__STATE_DIR=str(tmp_path / "state"),
               LAMBDARUN_PROGRESS="false", COVALENT_CONFIG_DIR=str(tmp_path / "covalent"))
    proc = subprocess.run([sys.executable, "-c", _REGION_RUN, region], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"plain": True, "executor": True, "stack_region": region}
