"""Idle means idle: a worker returns ``idle`` only once the server has listed its pollers and
then reports no backlog (real dev server; worker invocations in subprocesses).

What must hold, and what each test attacks:

* a slow link (0.25 s one-way through :class:`lambdarun.testing.FaultProxy`) delays the
  connection, the namespace validation and the first poll answer: the worker must not count
  that time as idle (it used to return ``idle`` after ~2 s with 0 of 20 queued done);
* a backlog the server holds back (a task queue rate limit spacing activity tasks ~2 s
  apart, more than ``idle_timeout``) must keep the worker until it is drained (it used to
  return ``idle`` after ~1.5 s with 0 of 6 activities run);
* an empty queue still ends in ``idle`` long before the deadline, also over the slow link.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lambdarun.testing import FaultProxy
from lambdarun_temporal.testing import start_workflows, with_client, workflow_results

LATENCY = 0.25  # one-way seconds between worker and server


@pytest.fixture
def slow_link(temporal_server) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", temporal_server.port), latency=LATENCY) as proxy:
        yield proxy


def rate_limit_activities(address: str, task_queue: str, per_second: float) -> None:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import RateLimit
    from temporalio.api.workflowservice.v1 import UpdateTaskQueueConfigRequest

    async def update(client: Any) -> None:
        await client.workflow_service.update_task_queue_config(
            UpdateTaskQueueConfigRequest(
                namespace="default",
                identity="test_idle",
                task_queue=task_queue,
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                update_queue_rate_limit=UpdateTaskQueueConfigRequest.RateLimitUpdate(
                    rate_limit=RateLimit(requests_per_second=per_second), reason="test_idle"
                ),
            )
        )

    with_client(address, update)


@pytest.mark.timeout(120)
def test_slow_link_worker_drains_before_idle(temporal_server, slow_link, task_queue, run_handler):
    count = 20
    ids = start_workflows(temporal_server.address, task_queue, "AddOne", range(count))
    env = {"TEMPORAL_ADDRESS": f"127.0.0.1:{slow_link.port}", "TEMPORAL_TASK_QUEUE": task_queue}
    out = run_handler("basic", 20, env)
    assert out["returncode"] == 0, out["stderr"]
    summary = out["result"]
    assert summary["stop_reason"] == "idle", out["log"]
    assert summary["activities"] == count, summary
    assert workflow_results(temporal_server.address, ids) == [i + 1 for i in range(count)]
    # the idle clock started once the server listed the worker's pollers
    assert summary["ready_seconds"] is not None, summary
    assert slow_link.connections >= 1  # the worker really went through the slow link


@pytest.mark.timeout(90)
def test_server_held_backlog_keeps_the_worker(temporal_server, task_queue, run_handler):
    rate_limit_activities(temporal_server.address, task_queue, 1.0)
    ids = start_workflows(temporal_server.address, task_queue, "AddOne", range(6))
    out = run_handler("basic", 40, {"TEMPORAL_ADDRESS": temporal_server.address,
                                    "TEMPORAL_TASK_QUEUE": task_queue})
    assert out["returncode"] == 0, out["stderr"]
    summary = out["result"]
    assert summary["stop_reason"] == "idle", summary
    assert summary["activities"] == 6, summary
    assert workflow_results(temporal_server.address, ids) == [i + 1 for i in range(6)]


@pytest.mark.timeout(90)
def test_empty_queue_over_slow_link_still_idles(temporal_server, slow_link, task_queue, run_handler):
    env = {"TEMPORAL_ADDRESS": f"127.0.0.1:{slow_link.port}", "TEMPORAL_TASK_QUEUE": task_queue}
    out = run_handler("coroutine", 30, env)
    assert out["returncode"] == 0, out["stderr"]
    assert out["result"]["stop_reason"] == "idle", out["result"]
    assert out["result"]["activities"] == 0
    assert out["remaining_ms_at_return"] > 15_000  # idle long before the deadline
