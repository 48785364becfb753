"""lambdarun integration: the durable backend on the real local target (local Lambda
service running lambdarun.runtime.handler in awslambdaric workers), hooks, config and CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

import lambdarun
import lambdarun_durable.plugin
from lambdarun.hookspecs import hookimpl
from lambdarun.local.testing import local_stack_fixture, make_local_session
from lambdarun.types import ConditionHandle
from lambdarun_durable import DurableContext, StepContext, durable_execution, durable_step
from lambdarun_durable.backend import DurableExecutionFailed
from lambdarun_durable.cli import durable as durable_cli
from lambdarun_durable.config import CallbackConfig, Duration

pytestmark = pytest.mark.timeout(60)

local_stack = local_stack_fixture(scope="module")

FUNCTION = "lambdarun-durable-tests"


@pytest.fixture
def make_session(lambdarun_session: Callable[..., Any], local_stack: Any, tmp_path: Any) -> Callable[..., Any]:
    def factory(**durable: Any) -> Any:
        # the in-process orchestrator (its store, leases, CLI): test_backend_api.py covers the API path
        return make_local_session(
            lambdarun_session, local_stack, [lambdarun_durable.plugin],
            durable={"function_name": FUNCTION, "store_url": f"sqlite:///{tmp_path}/durable.db",
                     "api": "orchestrator", **durable},
        )

    return factory


@durable_step
def double(step_ctx: StepContext, x: int) -> dict:
    import os

    return {"value": x * 2, "pid": os.getpid()}


@durable_execution
def order_workflow(event: dict, ctx: DurableContext) -> dict:
    first = ctx.step(double(event["n"]))
    ctx.wait(Duration.from_seconds(1), name="cool down")
    second = ctx.step(double(first["value"]), name="again")
    return {"result": second["value"], "pids": [first["pid"], second["pid"]]}


def test_run_on_local_target(make_session: Callable[..., Any]) -> None:
    import os

    session = make_session()
    out = lambdarun.run(order_workflow, {"n": 5}, backend="durable", session=session)
    assert out["result"] == 20
    assert os.getpid() not in out["pids"]  # the steps ran inside Lambda workers
    backend = session.backend("durable")
    (execution,) = backend.service.list_executions()
    assert execution["Status"] == "SUCCEEDED"
    types = [e["EventType"] for e in backend.get_history(execution["DurableExecutionArn"])["Events"]]
    assert types.count("InvocationCompleted") == 2  # suspended on the wait, re-invoked when due
    assert types[-1] == "ExecutionSucceeded"


def test_runtime_function_comes_from_the_shared_backend_helper(make_session: Callable[..., Any]) -> None:
    """The function is the one ``function_spec`` describes, created once by the base class's
    ``function_name`` on the local target, and its events may name only the backend's store."""
    from lambdarun.backends import Backend

    session = make_session()
    backend = session.backend("durable")
    assert "function_name" not in type(backend).__dict__  # the base class's helper
    spec = backend.function_spec()
    assert spec.name == FUNCTION
    assert spec.environment["LAMBDARUN_DURABLE__STORE_URL"] == backend.store_url
    assert backend.function_name == FUNCTION and backend.function_name == FUNCTION
    function = session.target.client("lambda").get_function(FunctionName=FUNCTION)["Configuration"]
    assert function["Environment"]["Variables"]["LAMBDARUN_DURABLE__STORE_URL"] == backend.store_url
    assert isinstance(backend, Backend)


def plain_handler(event: dict, ctx: DurableContext) -> str:
    ctx.step(lambda _: None, name="noop")
    raise ValueError(f"bad order {event['id']}")


def test_failure_raises_with_remote_error(make_session: Callable[..., Any]) -> None:
    session = make_session()
    with pytest.raises(DurableExecutionFailed) as ei:
        lambdarun.run(plain_handler, {"id": 7}, backend="durable", session=session)
    assert ei.value.original_type == "ValueError"
    assert "bad order 7" in str(ei.value)


@durable_execution
def approval_workflow(event: dict, ctx: DurableContext) -> Any:
    cb = ctx.create_callback(name="approval", config=CallbackConfig(timeout=Duration.from_minutes(5)))
    return {"approved_by": cb.result()}


def test_callback_completed_through_api_and_cli(make_session: Callable[..., Any], tmp_path: Any) -> None:
    session = make_session()
    future = lambdarun.submit(approval_workflow, {}, backend="durable", session=session)
    arn = future.task_id
    backend = session.backend("durable")
    deadline = time.monotonic() + 30
    callback_id = None
    while callback_id is None and time.monotonic() < deadline:
        for ev in backend.get_history(arn)["Events"]:
            if ev["EventType"] == "CallbackStarted":
                callback_id = ev["CallbackStartedDetails"]["CallbackId"]
        time.sleep(0.05)
    assert callback_id
    env = {"LAMBDARUN_DURABLE__STORE_URL": f"sqlite:///{tmp_path}/durable.db", "LAMBDARUN_DURABLE__API": "orchestrator"}
    cli = CliRunner()
    r = cli.invoke(durable_cli, ["send-callback-success", callback_id, "alice"], env=env)
    assert r.exit_code == 0, r.output
    assert future.result(timeout=30) == {"approved_by": "alice"}
    r = cli.invoke(durable_cli, ["history", arn], env=env)
    assert r.exit_code == 0, r.output
    events = json.loads(r.output)["Events"]
    assert [e["EventType"] for e in events if "Callback" in e["EventType"]] == ["CallbackStarted", "CallbackSucceeded"]
    r = cli.invoke(durable_cli, ["list", "--status", "SUCCEEDED"], env=env)
    assert arn in r.output
    r = cli.invoke(durable_cli, ["describe", arn], env=env)
    assert json.loads(r.output)["Status"] == "SUCCEEDED"


class RecordingPoller:
    """The default poller, recording what it is asked to wait for."""

    def __init__(self) -> None:
        from lambdarun.polling import AdaptivePoller

        self.inner = AdaptivePoller(max_interval=0.05)
        self.waits: list[list[Any]] = []

    def wait(self, handles: Any, **kwargs: Any) -> Any:
        self.waits.append(list(handles))
        return self.inner.wait(handles, **kwargs)


class RecordingPollerPlugin:
    def __init__(self) -> None:
        self.poller = RecordingPoller()

    @hookimpl
    def lambdarun_make_poller(self, session: Any) -> RecordingPoller:
        return self.poller


def test_waiting_for_a_callback_polls_on_the_sessions_poller(
    lambdarun_session: Callable[..., Any], local_stack: Any, tmp_path: Any
) -> None:
    recorder = RecordingPollerPlugin()
    session = make_local_session(
        lambdarun_session, local_stack, [lambdarun_durable.plugin, recorder],
        durable={"function_name": FUNCTION, "store_url": f"sqlite:///{tmp_path}/durable.db",
                 "api": "orchestrator"},  # the orchestrator's callback wait
    )
    future = lambdarun.submit(approval_workflow, {}, backend="durable", session=session)
    backend = session.backend("durable")
    deadline = time.monotonic() + 30
    callback_id = None
    while callback_id is None and time.monotonic() < deadline:
        for ev in backend.get_history(future.task_id)["Events"]:
            if ev["EventType"] == "CallbackStarted":
                callback_id = ev["CallbackStartedDetails"]["CallbackId"]
        time.sleep(0.05)
    assert callback_id
    # the driver is (or soon will be) blocked in the poller, on a condition over the store
    while not recorder.poller.waits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.poller.waits, "the driver waited without the session's poller"
    assert all(isinstance(h, ConditionHandle) for handles in recorder.poller.waits for h in handles)
    backend.send_callback_success(callback_id, "bob")
    assert future.result(timeout=30) == {"approved_by": "bob"}


def test_hooks_config_and_stores(lambdarun_session: Callable[..., Any], tmp_path: Any) -> None:
    session = lambdarun_session(lambdarun_durable.plugin, environ={"LAMBDARUN_DURABLE__BATCH_RECORDS": "50"})
    cfg = session.settings.section("durable")
    assert cfg.batch_records == 50
    assert cfg.resolved_store_url().startswith("sqlite:////") and cfg.resolved_store_url().endswith("durable.db")
    store = session.checkpoint_store(f"sqlite:///{tmp_path}/x.db")
    assert store.create("e", {"status": "RUNNING"}).version == 1
    assert "durable" in session.backends.ids()
    assert session.pm.hook.lambdarun_make_checkpoint_store(url="mem://x", session=session) is None
    assert session.pm.hook.lambdarun_handle_event(event={"other": 1}, context=None, session=session) is None


def test_cli_stop(lambdarun_session: Callable[..., Any], tmp_path: Any) -> None:
    from lambdarun_durable.service import DurableService
    from lambdarun_durable.stores import SQLiteCheckpointStore

    url = f"sqlite:///{tmp_path}/stop.db"
    service = DurableService(SQLiteCheckpointStore(str(tmp_path / "stop.db"), url=url))
    arn = service.start_execution("fn", "{}")
    r = CliRunner().invoke(durable_cli, ["stop", arn, "--store-url", url])
    assert r.exit_code == 0, r.output
    assert service.describe(arn)["Status"] == "STOPPED"
    r = CliRunner().invoke(durable_cli, ["stop", arn, "--store-url", url])
    assert r.exit_code != 0 and "already STOPPED" in r.output


def test_run_with_dynamodb_store_on_local_target(make_session: Callable[..., Any]) -> None:
    """Orchestrator and Lambda workers both reach the local target's DynamoDB via session.target."""
    import uuid

    table = f"durable-{uuid.uuid4().hex[:8]}"
    session = make_session(store_url=f"dynamodb://{table}")
    out = lambdarun.run(order_workflow, {"n": 1}, backend="durable", session=session)
    assert out["result"] == 4
    ddb = session.target.client("dynamodb")
    items = ddb.scan(TableName=table)["Items"]
    assert any(i["sk"]["S"] == "#META" for i in items)


def test_lambdarun_cli_has_durable_group(tmp_path: Any) -> None:
    from lambdarun.cli import _attach_plugin_commands, cli

    from lambdarun_durable.service import DurableService
    from lambdarun_durable.stores import SQLiteCheckpointStore

    url = f"sqlite:///{tmp_path}/cli.db"
    arn = DurableService(SQLiteCheckpointStore(str(tmp_path / "cli.db"), url=url)).start_execution("fn", "{}")
    _attach_plugin_commands()
    r = CliRunner().invoke(cli, ["durable", "list", "--status", "RUNNING", "--store-url", url])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["DurableExecutions"][0]["DurableExecutionArn"] == arn


@durable_execution
def pricing(event: dict, ctx: DurableContext) -> int:
    return ctx.step(lambda _: event["qty"] * 3, name="price")


@durable_execution
def checkout(event: dict, ctx: DurableContext) -> dict:
    price = ctx.invoke("pricing-fn", {"qty": event["qty"]}, name="get price")
    return {"total": price + 1}


def test_chained_invoke_on_local_target(make_session: Callable[..., Any]) -> None:
    session = make_session()
    backend = session.backend("durable")
    backend.register_durable_function("pricing-fn", pricing)
    assert lambdarun.run(checkout, {"qty": 4}, backend="durable", session=session) == {"total": 13}
    arns = [e["DurableExecutionArn"] for e in backend.service.list_executions()]
    assert len(arns) == 2  # the parent and its chained child execution


def test_cancel_stops_the_execution(make_session: Callable[..., Any]) -> None:
    session = make_session()
    future = lambdarun.submit(approval_workflow, {}, backend="durable", session=session)
    backend = session.backend("durable")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(e["EventType"] == "CallbackStarted" for e in backend.get_history(future.task_id)["Events"]):
            break
        time.sleep(0.05)
    assert future.cancel()
    assert backend.service.describe(future.task_id)["Status"] == "STOPPED"


def test_runtime_hook_runs_configured_handler_for_plain_aws_events(
    lambdarun_session: Callable[..., Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function deployed for plain AWS-shaped events names its handler with durable.handler."""
    import sys
    from pathlib import Path

    from lambdarun_durable.service import DurableService

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import killable_handler

    monkeypatch.setattr(killable_handler, "LOG", str(tmp_path / "side-effects.log"))
    url = f"sqlite:///{tmp_path}/hook.db"
    session = lambdarun_session(
        lambdarun_durable.plugin, overrides={"durable": {"handler": "killable_handler:handler", "store_url": url}}
    )
    service = DurableService(session.checkpoint_store(url))
    arn = service.start_execution("fn", json.dumps({"pause": 0}))
    event, _ = service.invocation_event(arn)
    out = session.pm.hook.lambdarun_handle_event(event=json.loads(json.dumps(event)), context=None, session=session)
    assert out == {"Status": "SUCCEEDED", "Result": str(sum(range(12)))}
    assert "killable_handler" in sys.modules


def test_resume_after_the_orchestrator_is_gone(make_session: Callable[..., Any]) -> None:
    """An execution created by one session is driven to its end by another one."""
    first = make_session()
    arn = first.backend("durable").start(order_workflow, {"n": 3})  # created, never driven here
    first.close()
    second = make_session()
    assert second.backend("durable").resume(arn).result(timeout=30)["result"] == 12
    service = second.backend("durable").service
    assert service.describe(arn)["Status"] == "SUCCEEDED"
    # the stored handler envelope is not sent with every event
    event, _ = service.invocation_event(arn)
    exec_op = next(o for o in event["InitialExecutionState"]["Operations"] if o["Type"] == "EXECUTION")
    assert "_Handlers" not in exec_op
