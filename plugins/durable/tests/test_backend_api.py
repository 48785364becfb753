"""The durable backend on the local service's durable-execution API: the runtime function is
a durable function, ``submit`` starts an execution with Invoke and the caller only polls
GetDurableExecution; the service drives the execution, so it finishes after the caller dies.
Nothing here uses the in-process orchestrator (its store stays empty)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_durable.plugin
from lambdarun.local.testing import local_stack_fixture, make_local_session

from lambdarun_durable import DurableContext, durable_execution
from lambdarun_durable.backend import DurableExecutionFailed
from lambdarun_durable.config import CallbackConfig, Duration
from lambdarun_durable.events import HANDLER_KEY, INPUT_KEY

local_stack = local_stack_fixture(scope="module")

FUNCTION = "lambdarun-durable-api-tests"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def session(lambdarun_session: Callable[..., Any], local_stack: Any, tmp_path: Any) -> Any:
    # "auto": the local service has the durable API, so the backend uses it
    return make_local_session(
        lambdarun_session, local_stack, [lambdarun_durable.plugin],
        durable={"function_name": FUNCTION, "store_url": f"sqlite:///{tmp_path}/durable.db"},
    )


@durable_execution
def workflow(event: dict, ctx: DurableContext) -> dict:
    squares = [ctx.step(lambda _, i=i: i * i, name=f"sq{i}") for i in range(event["n"])]
    ctx.wait(Duration.from_seconds(1), name="pause")
    return {"squares": squares, "pid": ctx.step(lambda _: os.getpid(), name="pid")}


@durable_execution
def failing(event: dict, ctx: DurableContext) -> None:
    ctx.step(lambda _: 1, name="one")
    raise ValueError(f"bad order {event['id']}")


@durable_execution
def approval(event: dict, ctx: DurableContext) -> Any:
    cb = ctx.create_callback(name="approval", config=CallbackConfig(timeout=Duration.from_seconds(60)))
    return {"approved_by": cb.result()}


def test_run_goes_through_the_service(session: Any) -> None:
    backend = session.backend("durable")
    assert backend.uses_api
    out = lambdarun.run(workflow, {"n": 4}, backend="durable", session=session)
    assert out["squares"] == [0, 1, 4, 9]
    assert out["pid"] != os.getpid()  # ran in a Lambda worker
    assert backend.service.list_executions() == []  # the orchestrator's store was never used
    lam = session.target.client("lambda")
    assert lam.get_function_configuration(FunctionName=FUNCTION)["DurableConfig"]["ExecutionTimeout"] > 0
    (execution,) = lam.list_durable_executions_by_function(FunctionName=FUNCTION)["DurableExecutions"]
    assert execution["Status"] == "SUCCEEDED"
    types = [e["EventType"] for e in backend.get_history(execution["DurableExecutionArn"])["Events"]]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert "WaitSucceeded" in types and types.count("InvocationCompleted") >= 2  # the service re-invoked


def test_failure_raises_the_executions_error(session: Any) -> None:
    with pytest.raises(DurableExecutionFailed) as info:
        lambdarun.run(failing, {"id": 7}, backend="durable", session=session)
    assert "bad order 7" in str(info.value)
    assert info.value.error["ErrorType"] == "ValueError"


def test_callback_and_resume_wait_for_the_arn(session: Any) -> None:
    backend = session.backend("durable")
    arn = backend.start(approval, {})
    deadline = time.monotonic() + 60
    callback_id = None
    while callback_id is None:
        assert time.monotonic() < deadline, "no CallbackStarted"
        callback_id = next((e["CallbackStartedDetails"]["CallbackId"] for e in backend.get_history(arn)["Events"]
                            if e["EventType"] == "CallbackStarted"), None)
        time.sleep(0.05)
    future = backend.resume(arn)  # on the API: wait for this ARN
    backend.send_callback_success(callback_id, "alice")  # passed through as is, like the orchestrator path
    assert future.result(timeout=60) == {"approved_by": "alice"}
    assert backend.resume(arn).result(timeout=30) == {"approved_by": "alice"}  # ended: at once


CALLER = textwrap.dedent('''
    import os, sys, time
    import lambdarun
    from lambdarun_durable import durable_execution
    from lambdarun_durable.config import Duration

    @durable_execution
    def slow(event, ctx):
        done = [ctx.step(lambda _, i=i: i, name=f"s{i}") for i in range(3)]
        ctx.wait(Duration.from_seconds(2), name="outlive the caller")
        return sum(done) + event["add"]

    with lambdarun.Session() as session:
        future = lambdarun.submit(slow, {"add": 10}, backend="durable", session=session)
        print(future.task_id, flush=True)
        time.sleep(600)  # killed before the execution ends
''')


def test_the_execution_finishes_after_its_caller_is_killed(local_stack: Any, session: Any, tmp_path: Path) -> None:
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    key = session.settings.signing_key if hasattr(session.settings, "signing_key") else None
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO), *(str(REPO / "plugins" / p) for p in ("covalent", "temporal", "durable")), *sys.path]),
        "LAMBDARUN_TARGET": "local",
        "LAMBDARUN_LOCAL__STATE_DIR": str(local_stack.state_dir),
        "LAMBDARUN_PROGRESS": "false",
        "LAMBDARUN_DURABLE__FUNCTION_NAME": FUNCTION,
        "LAMBDARUN_DURABLE__STATE_DIR": str(tmp_path / "state"),
    }
    if key:
        env["LAMBDARUN_SIGNING_KEY"] = key if isinstance(key, str) else key.decode()
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        arn = proc.stdout.readline().strip()
        assert arn.startswith("arn:aws:lambda:"), proc.stderr.read() if proc.poll() is not None else arn
        lam = session.target.client("lambda")
        assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 120
        while (desc := lam.get_durable_execution(DurableExecutionArn=arn))["Status"] == "RUNNING":
            assert time.monotonic() < deadline, "the execution did not finish without its caller"
            time.sleep(0.1)
        assert desc["Status"] == "SUCCEEDED", desc
        assert json.loads(desc["Result"]) == 13
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_an_unsigned_handler_in_the_payload_runs_nothing(session: Any, tmp_path: Path) -> None:
    """A payload whose handler envelope is not signed with the function's key (forged, or a
    pickle) ends the execution FAILED; the code it carries never ran."""
    import pickle

    session.backend("durable").function_name  # the durable function exists
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    lam = session.target.client("lambda")
    for forged in (base64.b64encode(pickle.dumps(Evil())).decode(), base64.b64encode(b"LRN1" + b"x" * 64).decode(),
                   "not base64 !"):
        out = lam.invoke(FunctionName=FUNCTION, Qualifier="$LATEST", InvocationType="Event",
                         Payload=json.dumps({HANDLER_KEY: forged, INPUT_KEY: {}}).encode())
        arn = out["DurableExecutionArn"]
        deadline = time.monotonic() + 60
        while (desc := lam.get_durable_execution(DurableExecutionArn=arn))["Status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert desc["Status"] == "FAILED", desc
        assert not marker.exists()
