"""run_worker against the real dev server; each invocation in its own subprocess."""

from __future__ import annotations

from typing import Any

import pytest

from lambdarun_temporal import testing
from lambdarun_temporal.testing import with_client


def start_workflows(address: str, task_queue: str, count: int, workflow: str = "AddOne") -> list[str]:
    args: list[Any] = list(range(count)) if workflow == "AddOne" else [f"text {i}" for i in range(count)]
    return testing.start_workflows(address, task_queue, workflow, args)


def results(address: str, ids: list[str]) -> list[Any]:
    return testing.workflow_results(address, ids)


def identities(address: str, workflow_id: str) -> set[str]:
    async def fetch(client: Any) -> set[str]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return {e.activity_task_started_event_attributes.identity for e in history.events
                if e.HasField("activity_task_started_event_attributes")}

    return with_client(address, fetch)


def env_for(server: Any, task_queue: str) -> dict[str, str]:
    return {"TEMPORAL_ADDRESS": server.address, "TEMPORAL_TASK_QUEUE": task_queue}


@pytest.mark.timeout(60)
def test_workflows_and_activities_complete_then_idle_exit(temporal_server, task_queue, run_handler):
    ids = start_workflows(temporal_server.address, task_queue, 20)
    text_ids = start_workflows(temporal_server.address, task_queue, 3, workflow="Shout")
    out = run_handler("basic", 20, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert out["result"]["stop_reason"] == "idle"
    assert out["result"]["activities"] == 23
    assert results(temporal_server.address, ids) == [i + 1 for i in range(20)]
    assert results(temporal_server.address, text_ids) == [f"TEXT {i}" for i in range(3)]
    # the worker identity is <request id>@<function ARN>
    assert any(i.endswith("@arn:aws:lambda:us-east-1:123456789012:function:temporal-worker")
               for i in identities(temporal_server.address, ids[0]))
    # every hook ran although the first one raised
    assert out["markers"] == ["hook1", "hook2", "hook3"], out["log"]
    assert "hook one failed" in out["log"]


@pytest.mark.timeout(60)
def test_empty_queue_idle_exit_long_before_deadline(temporal_server, task_queue, run_handler):
    out = run_handler("coroutine", 30, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert out["result"]["stop_reason"] == "idle"
    assert out["result"]["activities"] == 0
    # returned with most of its 30 s left (idle after 1 s, not deadline - buffer)
    assert out["remaining_ms_at_return"] > 20_000
    assert out["markers"] == ["hook1", "hook2", "hook3"], out["log"]


@pytest.mark.timeout(60)
def test_deadline_respected_with_short_timeout(temporal_server, task_queue, run_handler):
    start_workflows(temporal_server.address, task_queue, 2)
    out = run_handler("no_idle", 4, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert out["result"]["stop_reason"] == "deadline"
    assert out["result"]["activities"] == 2
    assert out["remaining_ms_at_return"] > 0
    assert out["markers"] == ["hook1", "hook2", "hook3"], out["log"]


@pytest.mark.timeout(60)
def test_hanging_hooks_cannot_push_past_the_deadline(temporal_server, task_queue, run_handler):
    out = run_handler("slow_hooks", 4, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert out["result"]["stop_reason"] == "deadline"
    assert out["remaining_ms_at_return"] > 0
    # each hook got its slice: the third one still ran after two hung
    assert out["markers"] == ["hang-start", "async-hang-start", "last"], out["log"]
    assert "shutdown hook timed out" in out["log"]


@pytest.mark.timeout(60)
def test_too_short_timeout_is_a_clear_error_and_hooks_run(temporal_server, task_queue, run_handler):
    out = run_handler("basic", 2, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert out["error_type"] == "LambdaTimeoutTooShortError"
    # the reference's type (RuntimeError) and message, then how long the timeout must be
    assert "RuntimeError" in out["error_mro"]
    assert out["error"].startswith("Lambda timeout is too short: ")
    assert "a function timeout of at least 4s leaves time for work" in out["error"]
    assert out["markers"] == ["hook1", "hook2", "hook3"], out["log"]


@pytest.mark.timeout(60)
def test_buffer_follows_graceful_shutdown(temporal_server, task_queue, run_handler):
    out = run_handler("unbuffered", 20, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert out["markers"] == ["buffer-before:2.5", "buffer-after:4.5"], out["log"]


@pytest.mark.timeout(60)
def test_hooks_run_after_connect_failure_within_deadline(hanging_server, task_queue, run_handler):
    out = run_handler("basic", 5, {"TEMPORAL_ADDRESS": hanging_server, "TEMPORAL_TASK_QUEUE": task_queue})
    assert out["returncode"] == 0, out["stderr"]
    assert out["error_type"] == "TemporalConnectError"
    assert hanging_server in out["error"]
    assert out["remaining_ms_at_return"] > 0
    assert out["markers"] == ["hook1", "hook2", "hook3"], out["log"]


@pytest.mark.timeout(60)
def test_hooks_run_after_connection_refused(task_queue, run_handler):
    from lambdarun_temporal.devserver import free_port

    address = f"127.0.0.1:{free_port()}"
    out = run_handler("basic", 10, {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue})
    assert out["returncode"] == 0, out["stderr"]
    assert "error_type" in out
    assert out["markers"] == ["hook1", "hook2", "hook3"], out["log"]


@pytest.mark.timeout(60)
def test_hooks_run_after_worker_construction_error(temporal_server, task_queue, run_handler):
    out = run_handler("bad_worker", 10, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert out["error_type"] in {"TypeError", "ValueError"}  # temporalio's own error, unchanged
    assert out["markers"] == ["hook1", "hook2", "hook3"], out["log"]


@pytest.mark.timeout(60)
def test_hooks_run_after_worker_run_error(temporal_server, task_queue, run_handler):
    out = run_handler("bad_namespace", 10, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert "error_type" in out
    assert "no-such-namespace" in out["error"] or "Namespace" in out["error"]
    assert out["markers"] == ["hook1", "hook2", "hook3"], out["log"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario", ["asyncgen", "context_manager"])
def test_async_generator_teardown_runs_after_hooks(temporal_server, task_queue, run_handler, scenario):
    ids = start_workflows(temporal_server.address, task_queue, 2)
    out = run_handler(scenario, 20, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert out["markers"] == ["setup", "hook", "teardown"], out["log"]
    assert results(temporal_server.address, ids) == [1, 2]


@pytest.mark.timeout(60)
def test_async_generator_teardown_runs_after_connect_failure(task_queue, run_handler):
    from lambdarun_temporal.devserver import free_port

    out = run_handler(
        "asyncgen", 10, {"TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "TEMPORAL_TASK_QUEUE": task_queue}
    )
    assert out["returncode"] == 0, out["stderr"]
    assert "error_type" in out
    assert out["markers"] == ["setup", "hook", "teardown"], out["log"]


@pytest.mark.timeout(60)
def test_otel_tracing_is_flushed_before_returning(temporal_server, task_queue, run_handler):
    ids = start_workflows(temporal_server.address, task_queue, 2)
    out = run_handler("otel", 20, env_for(temporal_server, task_queue))
    assert out["returncode"] == 0, out["stderr"]
    assert results(temporal_server.address, ids) == [1, 2]
    spans = int(out["markers"][-1].split(":")[1])
    assert spans >= 1  # held by the batch processor until the flush hook ran
