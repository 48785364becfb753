"""Chaos: SIGKILL the shared local stack (`lambdarun local up`) and start it again.

What must hold: a synchronous caller in flight gets a typed error within its timeout (never a
hang, never a blind re-send), the next `up` on the same state directory has the functions, the
S3/DynamoDB data and the queued Event invocations (each run exactly once), attached callers
follow the new ports, and restarts do not pile up extracted code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

import lambdarun.local.plugin as local_plugin
from lambdarun.local import LocalStack, LocalStackUnavailableError
from lambdarun.local.event_store import EventStore, StoredEvent
from lambdarun.local.plugin import LocalTarget
from lambdarun.local.stack_info import pid_running
from lambdarun.local.testing import make_zip
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session
from lambdarun.testing import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DEADLINE = 60.0  # generous: the machine is shared


def pending_events(state: Path) -> list[StoredEvent]:
    """The undelivered Event invocations the stack in ``state`` keeps for a restart."""
    return EventStore.read(state / "shared" / "state")


class Up:
    """`python -m lambdarun.local up` in a subprocess on one state directory."""

    def __init__(self, state: Path, *args: str) -> None:
        self.state = state
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.exports: dict[str, str] = {}
        self.worker_pids: list[int] = []

    def start(self) -> Up:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lambdarun.local", "up", "--state-dir", str(self.state),
             "--async-retry-delay", "0.1", "--max-concurrency", "4", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        self.exports = {}
        for line in self.proc.stdout:
            if line.startswith("export "):
                key, _, value = line[len("export "):].strip().partition("=")
                self.exports[key] = value
                if {"AWS_ENDPOINT_URL_STS", "AWS_SECRET_ACCESS_KEY"} <= self.exports.keys():
                    break
        assert "AWS_ENDPOINT_URL_LAMBDA" in self.exports, "`local up` did not start"
        return self

    @property
    def lambda_url(self) -> str:
        return self.exports["AWS_ENDPOINT_URL_LAMBDA"]

    def client(self, service: str) -> Any:
        session = boto3.session.Session(aws_access_key_id=self.exports["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=self.exports["AWS_SECRET_ACCESS_KEY"],
                                        region_name="us-east-1")
        key = "AWS_ENDPOINT_URL_LAMBDA" if service == "lambda" else "AWS_ENDPOINT_URL_S3"
        from botocore.config import Config

        return session.client(service, endpoint_url=self.exports[key],
                              config=Config(retries={"total_max_attempts": 1}, read_timeout=60))

    def extension(self, path: str) -> Any:
        from lambdarun.local.auth import StackCredentials, signed_request

        credentials = StackCredentials(self.exports["AWS_ACCESS_KEY_ID"], self.exports["AWS_SECRET_ACCESS_KEY"])
        with urllib.request.urlopen(signed_request(self.lambda_url + "/_lambdarun/" + path, credentials),
                                    timeout=10) as r:
            return json.loads(r.read())

    def environment_pids(self) -> list[int]:
        return [int(p) for p in self.extension("health")["environments"]]

    def kill(self) -> None:
        """SIGKILL the service: no cleanup of any kind runs in it."""
        assert self.proc is not None
        self.worker_pids = self.environment_pids()
        self.proc.kill()
        self.proc.wait(timeout=10)
        # the workers notice their parent is gone and exit
        wait_for(lambda: not any(pid_running(p) for p in self.worker_pids), "workers to exit")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    """``up(*args)`` starts `local up` on one state directory (again after a kill)."""
    state = tmp_path / "state"
    started: list[Up] = []

    def start(*args: str) -> Up:
        stack = Up(state, *args).start()
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


_EXTRA_PLUGINS = [] if "lambdarun.local.plugin" in DEFAULT_PLUGINS else [local_plugin]


@pytest.fixture
def attached_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], LocalTarget]]:
    """``attached_target(state_dir)``: a LocalTarget attached to the shared stack there
    (through stack.json), as another process's session would be."""
    made: list[tuple[LocalTarget, Session, LocalStack]] = []

    def make(state_dir: Path) -> LocalTarget:
        session = Session(make_plugin_manager(plugins=_EXTRA_PLUGINS, load_entrypoints=False),
                          overrides={"target": "local"})
        stack = LocalStack(state_dir, reuse=True, stop_at_exit=False).start()
        assert not stack.owned, "no shared stack to attach to"
        target = LocalTarget(session.settings, stack=stack)
        made.append((target, session, stack))
        return target

    yield make
    for target, session, stack in made:
        target.close()
        session.close()
        stack.stop()


SIDE_EFFECT_APP = """
import json, os, time

def handler(event, context):
    if event.get("block"):
        open(os.environ["STARTED_FILE"], "w").close()
        time.sleep(120)
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write(json.dumps({"id": event["id"], "request": context.aws_request_id}) + "\\n")
    return event["id"]
"""


def test_killed_service_keeps_functions_data_and_queued_events(
        up: Callable[[], Up], attached_target: Callable[[Path], LocalTarget], tmp_path: Path) -> None:
    count_file, started_file = tmp_path / "count.jsonl", tmp_path / "started"
    first = up()
    target = attached_target(first.state)
    lam, s3 = target.client("lambda"), target.client("s3")
    ddb = target.client("dynamodb")
    lam.create_function(
        FunctionName="effects", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler", Timeout=300,
        Code={"ZipFile": make_zip({"app.py": SIDE_EFFECT_APP})},
        Environment={"Variables": {"COUNT_FILE": str(count_file), "STARTED_FILE": str(started_file)}},
        Tags={"team": "chaos"},
    )
    lam.put_function_concurrency(FunctionName="effects", ReservedConcurrentExecutions=1)
    lam.put_function_event_invoke_config(FunctionName="effects", MaximumRetryAttempts=1)
    s3.create_bucket(Bucket="chaos-bucket")
    s3.put_object(Bucket="chaos-bucket", Key="before/kill.txt", Body=b"written before the kill")
    ddb.create_table(TableName="chaos", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName="chaos", Item={"k": {"S": "row"}, "n": {"N": "7"}})
    iam = target.client("iam")
    iam.create_role(RoleName="chaos-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                       "Action": "sts:AssumeRole"}]}))

    # a synchronous call occupies the function's only slot ...
    outcome: dict[str, Any] = {}

    def call() -> None:
        t0 = time.monotonic()
        try:
            outcome["response"] = lam.invoke(FunctionName="effects", Payload=json.dumps({"id": "sync", "block": True}))
        except Exception as e:
            outcome["error"] = e
        outcome["seconds"] = time.monotonic() - t0

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(started_file.exists, "the synchronous invocation to start")
    # ... so these Event invocations wait in the queue
    ids = [f"event-{i}" for i in range(5)]
    for event_id in ids:
        assert lam.invoke(FunctionName="effects", InvocationType="Event",
                          Payload=json.dumps({"id": event_id}))["StatusCode"] == 202
    assert len(pending_events(first.state)) == 5

    first.kill()
    caller.join(timeout=30)  # well within the client's 905 s read timeout: no hang
    assert not caller.is_alive(), "the synchronous caller hangs on a killed stack"
    error = outcome.get("error")
    assert isinstance(error, LocalStackUnavailableError), outcome
    assert error.maybe_ran and "lambdarun local up" in str(error)
    assert not count_file.exists()  # nothing ran while the stack was down

    second = up()
    # the same client follows the restarted stack (new ports read from stack.json)
    fn = lam.get_function(FunctionName="effects")
    assert target.stack.endpoints.lambda_ == second.lambda_url
    assert target.stack.endpoints.moto == second.exports["AWS_ENDPOINT_URL_S3"]
    assert fn["Tags"] == {"team": "chaos"}
    assert fn["Concurrency"] == {"ReservedConcurrentExecutions": 1}
    assert fn["Configuration"]["Environment"]["Variables"]["COUNT_FILE"] == str(count_file)
    assert lam.get_function_event_invoke_config(FunctionName="effects")["MaximumRetryAttempts"] == 1
    assert s3.get_object(Bucket="chaos-bucket", Key="before/kill.txt")["Body"].read() == b"written before the kill"
    assert ddb.get_item(TableName="chaos", Key={"k": {"S": "row"}})["Item"]["n"] == {"N": "7"}
    assert iam.get_role(RoleName="chaos-role")["Role"]["RoleName"] == "chaos-role"

    # the queued events run, each exactly once; the interrupted sync call is not re-run
    wait_for(lambda: not pending_events(second.state), "the restored events to be delivered")
    records = second.extension("invocations?function=effects&limit=100")["invocations"]
    assert sorted(r["status"] for r in records) == ["succeeded"] * 5
    assert all(r["attempts"] == 1 for r in records)
    lines = [json.loads(line) for line in count_file.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ids
    # and the function works as before
    assert json.loads(lam.invoke(FunctionName="effects", Payload=json.dumps({"id": "after"}))["Payload"].read()) == "after"


def test_an_event_running_when_the_service_dies_is_retried_once(up: Callable[[], Up], tmp_path: Path) -> None:
    count_file, started_file = tmp_path / "count.jsonl", tmp_path / "started"
    first = up()
    lam = first.client("lambda")
    lam.create_function(
        FunctionName="inflight", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler", Timeout=300,
        Code={"ZipFile": make_zip({"app.py": """
            import json, os, time
            def handler(event, context):
                if not os.path.exists(os.environ["STARTED_FILE"]):
                    open(os.environ["STARTED_FILE"], "w").close()
                    time.sleep(120)   # the first attempt is killed with the service
                with open(os.environ["COUNT_FILE"], "a") as f:
                    f.write(json.dumps({"request": context.aws_request_id}) + "\\n")
        """})},
        Environment={"Variables": {"COUNT_FILE": str(count_file), "STARTED_FILE": str(started_file)}},
    )
    request_id = lam.invoke(FunctionName="inflight", InvocationType="Event",
                            Payload=b"{}")["ResponseMetadata"]["RequestId"]
    wait_for(started_file.exists, "the first attempt to start")
    first.kill()

    second = up()
    wait_for(count_file.exists, "the retried attempt")
    wait_for(lambda: not pending_events(second.state), "the event to be delivered")
    record = second.extension(f"invocations/{request_id}")
    assert record["status"] == "succeeded" and record["attempts"] == 2
    assert [json.loads(line)["request"] for line in count_file.read_text().splitlines()] == [request_id]


def test_attached_caller_gets_a_typed_error_when_no_stack_is_up(
        up: Callable[[], Up], attached_target: Callable[[Path], LocalTarget]) -> None:
    first = up()
    target = attached_target(first.state)
    lam = target.client("lambda")
    assert lam.list_functions()["Functions"] == []
    first.kill()
    t0 = time.monotonic()
    with pytest.raises(LocalStackUnavailableError, match="lambdarun local up") as caught:
        lam.list_functions()
    assert not caught.value.maybe_ran
    assert time.monotonic() - t0 < 30
    with pytest.raises(LocalStackUnavailableError, match="lambdarun local up"):
        target.stop_invocation("no-such-function", "some-marker")
    # up again: the same client works without being rebuilt
    second = up()
    assert target.stop_invocation("no-such-function", "some-marker") is False  # follows it
    assert lam.list_functions()["Functions"] == []
    assert target.stack.endpoints.lambda_ == second.lambda_url


def code_usage(state: Path) -> tuple[int, list[str]]:
    root = state / "shared" / "functions"
    total, dirs = 0, []
    for path in root.rglob("*"):
        if path.is_file():
            total += path.stat().st_size
    for fn_dir in sorted(root.iterdir()) if root.is_dir() else []:
        dirs.extend(f"{fn_dir.name}/{c.name}" for c in sorted(fn_dir.iterdir()))
    return total, dirs


def test_restarts_do_not_grow_extracted_code(up: Callable[[], Up], tmp_path: Path) -> None:
    first = up()
    lam = first.client("lambda")
    big = "x = '" + "a" * 200_000 + "'\ndef handler(e, c):\n    return len(x)\n"
    for name in ("keep", "update", "delete"):
        lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": big})})
    for _ in range(3):
        lam.update_function_code(FunctionName="update", ZipFile=make_zip({"app.py": big + "# new\n"}))
    lam.delete_function(FunctionName="delete")
    usage, dirs = code_usage(first.state)
    # each function's code directory and its uploaded zip (GetFunction's Code.Location serves it)
    code_dirs = [d for d in dirs if not d.endswith(".zip")]
    assert len(code_dirs) == 2 and {d.split("/")[0] for d in code_dirs} == {"keep", "update"}
    assert sorted(dirs) == sorted([*code_dirs, *(d + ".zip" for d in code_dirs)])
    stack = first
    for _ in range(3):
        stack.kill()
        stack = up()
        assert code_usage(stack.state) == (usage, dirs)
        assert json.loads(stack.client("lambda").invoke(FunctionName="update")["Payload"].read()) == 200_000
    # code left behind by a crash (extracted, never saved) is removed by the next start
    orphan = stack.state / "shared" / "functions" / "keep" / "code-0123456789ab"
    orphan.mkdir()
    (orphan / "app.py").write_text("leftover")
    orphan.with_name(orphan.name + ".zip").write_bytes(b"leftover zip")
    stack.kill()
    stack = up()
    assert code_usage(stack.state) == (usage, dirs)
    s3 = stack.client("s3")
    s3.create_bucket(Bucket="forgotten-bucket")
    # --fresh forgets all of it (other files of the state directory stay)
    (stack.state / "keep-me").write_text("someone else's")
    stack.kill()
    stack = up("--fresh")
    assert stack.client("lambda").list_functions()["Functions"] == []
    assert stack.client("s3").list_buckets()["Buckets"] == []
    assert code_usage(stack.state) == (0, [])
    assert (stack.state / "keep-me").read_text() == "someone else's"


def test_down_removes_run_dirs_of_killed_embedded_stacks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = f"""
import os, sys
from lambdarun.local import LocalStack
from lambdarun.local.testing import make_zip
stack = LocalStack({str(state)!r}, reuse=False).start()
stack.client("lambda").create_function(FunctionName="f", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r",
    Handler="app.handler", Code={{"ZipFile": make_zip({{"app.py": "def handler(e, c):\\n    return 1\\n"}})}})
print(stack.run_dir, flush=True)
os.kill(os.getpid(), 9)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir() and any((run_dir / "functions").iterdir())  # left behind by the kill
    down = subprocess.run([sys.executable, "-m", "lambdarun.local", "down", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not run_dir.exists()


def test_the_process_wide_stack_follows_a_restart_instead_of_starting_its_own(up: Callable[..., Up]) -> None:
    from lambdarun.local.plugin import LocalConfig, embedded_stack

    first = up()
    config = LocalConfig(state_dir=str(first.state), idle_timeout=301.0)  # a key of its own
    stack = embedded_stack(config, "us-east-1")
    try:
        assert not stack.owned and stack.pid == first.proc.pid  # type: ignore[union-attr]
        first.kill()
        second = up()
        again = embedded_stack(config, "us-east-1")
        assert again is stack and not again.owned
        assert again.pid == second.proc.pid  # type: ignore[union-attr]
        assert again.endpoints.lambda_ == second.lambda_url
    finally:
        stack.stop()  # detaches; the shared stack keeps running
