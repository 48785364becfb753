"""Test and benchmark support: a dev-server fixture, a fake Lambda context and client helpers.

Use the fixture from a ``conftest.py``::

    from lambdarun_temporal.testing import temporal_dev_server  # noqa: F401

Client helpers run their own short event loop and collect garbage afterwards, so a test
process never keeps temporalio objects alive until interpreter exit.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import attrs
import pytest

from lambdarun_temporal.devserver import DevServer
from lambdarun_temporal.versioning import set_current_version

__all__ = [
    "FakeLambdaContext",
    "temporal_dev_server",
    "with_client",
    "set_current_version",
    "start_workflows",
    "workflow_results",
    "activity_outcomes",
]

T = TypeVar("T")


@attrs.define
class FakeLambdaContext:
    """The parts of the Lambda context the worker reads, with a real countdown."""

    timeout: float = 10.0
    aws_request_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:temporal-worker"
    function_name: str = "temporal-worker"
    _deadline: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@pytest.fixture(scope="session")
def temporal_dev_server() -> Iterator[DevServer]:
    """The real Temporal dev server on a free 127.0.0.1 port, stopped after the session."""
    server = DevServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def with_client(address: str, fn: Callable[[Any], Awaitable[T]], namespace: str = "default") -> T:
    """Connect, run ``await fn(client)`` in a fresh event loop, drop the client."""
    from temporalio.client import Client

    async def main() -> T:
        client = await Client.connect(address, namespace=namespace)
        return await fn(client)

    try:
        return asyncio.run(main())
    finally:
        gc.collect()


async def workflow_statuses(client: Any, workflow_ids: Sequence[str]) -> dict[str, str]:
    """``{workflow_id: status name}`` for the given ids."""

    async def one(wid: str) -> tuple[str, str]:
        desc = await client.get_workflow_handle(wid).describe()
        return wid, desc.status.name if desc.status else "UNKNOWN"

    return dict(await asyncio.gather(*(one(w) for w in workflow_ids)))


def start_workflows(address: str, task_queue: str, workflow: str, args: Sequence[Any]) -> list[str]:
    """Start ``workflow(arg)`` once per arg on ``task_queue``; return the workflow ids
    (``<task_queue>-<workflow>-<index>``)."""
    ids = [f"{task_queue}-{workflow}-{i}" for i in range(len(args))]

    async def start(client: Any) -> None:
        for wid, arg in zip(ids, args):
            await client.start_workflow(workflow, arg, id=wid, task_queue=task_queue)

    with_client(address, start)
    return ids


def workflow_results(address: str, ids: Sequence[str]) -> list[Any]:
    """The results of the given workflows (waits for each to close)."""

    async def fetch(client: Any) -> list[Any]:
        return [await client.get_workflow_handle(wid).result() for wid in ids]

    return with_client(address, fetch)


def activity_outcomes(address: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per workflow: ``status`` (name), ``result`` (when completed) and ``completed_attempt``,
    the attempt number of the activity attempt the server recorded as completed (None if
    none), from the workflow's history. For workflows with one activity."""

    async def one(client: Any, wid: str) -> tuple[str, dict[str, Any]]:
        handle = client.get_workflow_handle(wid)
        desc = await handle.describe()
        history = await handle.fetch_history()
        started: dict[int, int] = {}
        completed_attempt = None
        for event in history.events:
            if event.HasField("activity_task_started_event_attributes"):
                started[event.event_id] = event.activity_task_started_event_attributes.attempt
            if event.HasField("activity_task_completed_event_attributes"):
                attrs_ = event.activity_task_completed_event_attributes
                completed_attempt = started.get(attrs_.started_event_id)
        status = desc.status.name if desc.status else "UNKNOWN"
        result = await handle.result() if status == "COMPLETED" else None
        return wid, {"status": status, "result": result, "completed_attempt": completed_attempt}

    async def fetch(client: Any) -> dict[str, dict[str, Any]]:
        return dict(await asyncio.gather(*(one(client, wid) for wid in ids)))

    return with_client(address, fetch)
