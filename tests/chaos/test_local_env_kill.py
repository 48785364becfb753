"""Chaos: SIGKILL one execution environment while it runs an invocation.

The environment's pid comes from the service's extension API (``GET /_lambdarun/functions``),
as an operator would find it. The caller gets AWS's error shape (``Runtime.ExitError``,
``X-Amz-Function-Error: Unhandled``) well within the function's timeout, an Event is retried,
and the next call works on a fresh environment.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local import LocalStack
from lambdarun.local.stack_info import pid_running
from lambdarun.local.testing import busy_pids, create_function, local_stack_fixture
from lambdarun.testing import wait_for

pytestmark = pytest.mark.timeout(120)

env_kill_stack = local_stack_fixture(scope="module", async_retry_delay=0.1, max_concurrency=4)

APP = """
import json, os, time

def handler(event, context):
    if event.get("block") and not os.path.exists(os.environ["BLOCKED_ONCE"]):
        open(os.environ["BLOCKED_ONCE"], "w").close()
        time.sleep(100)
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write(json.dumps({"request": context.aws_request_id, "pid": os.getpid()}) + "\\n")
    return os.getpid()
"""


def busy_pid(stack: LocalStack, function: str) -> int | None:
    """The pid of ``function``'s busy environment, through the extension API."""
    pids = busy_pids(stack, function)
    return pids[0] if pids else None


@pytest.fixture
def blocking_function(env_kill_stack: LocalStack, tmp_path: Path) -> Iterator[tuple[Any, str, Path]]:
    lam = env_kill_stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=120)
    name = f"env-kill-{os.getpid()}-{tmp_path.name}"[:64]
    count = tmp_path / "count.jsonl"
    create_function(lam, name, APP, timeout=100,
                    environment={"COUNT_FILE": str(count), "BLOCKED_ONCE": str(tmp_path / "blocked")})
    try:
        yield lam, name, count
    finally:
        lam.delete_function(FunctionName=name)


def test_sigkill_of_a_busy_environment_gives_runtime_exit_error(
        env_kill_stack: LocalStack, blocking_function: tuple[Any, str, Path]) -> None:
    lam, name, count = blocking_function
    outcome: dict[str, Any] = {}

    def call() -> None:
        t0 = time.monotonic()
        outcome["response"] = lam.invoke(FunctionName=name, Payload=json.dumps({"block": True}))
        outcome["seconds"] = time.monotonic() - t0

    caller = threading.Thread(target=call)
    caller.start()
    pid = wait_for(lambda: busy_pid(env_kill_stack, name), "a busy environment")
    os.kill(pid, signal.SIGKILL)
    caller.join(timeout=60)
    assert not caller.is_alive()
    response = outcome["response"]
    assert outcome["seconds"] < 100  # the function's timeout: the kill ended it, not the clock
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert error["errorMessage"].startswith(f"RequestId: {response['ResponseMetadata']['RequestId']} ")
    assert not count.exists()  # the killed invocation did not get to its side effect
    wait_for(lambda: not pid_running(pid), "the killed worker to be reaped")
    # a later call works, on a new environment
    later = lam.invoke(FunctionName=name, Payload=b"{}")
    assert "FunctionError" not in later
    assert json.loads(later["Payload"].read()) != pid
    assert len(count.read_text().splitlines()) == 1


def test_sigkill_of_an_event_environment_retries_it_once(
        env_kill_stack: LocalStack, blocking_function: tuple[Any, str, Path]) -> None:
    lam, name, count = blocking_function
    request_id = lam.invoke(FunctionName=name, InvocationType="Event",
                            Payload=json.dumps({"block": True}))["ResponseMetadata"]["RequestId"]
    pid = wait_for(lambda: busy_pid(env_kill_stack, name), "a busy environment")
    os.kill(pid, signal.SIGKILL)

    def record() -> dict[str, Any] | None:
        url = f"{env_kill_stack.endpoints.lambda_}/_lambdarun/invocations/{request_id}"
        with urllib.request.urlopen(env_kill_stack.signed_request(url), timeout=10) as r:
            doc = json.loads(r.read())
        return doc if doc["status"] == "succeeded" else None

    doc = wait_for(record, "the retried Event to succeed")
    assert doc["attempts"] == 2
    runs = [json.loads(line) for line in count.read_text().splitlines()]
    assert [r["request"] for r in runs] == [request_id]  # the retry ran once, with the same id
    assert runs[0]["pid"] != pid
