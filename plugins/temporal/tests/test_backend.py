"""``lambdarun.run(f, backend="temporal")`` on the real local target + real dev server: the
client starts the built-in workflow, the controller invokes the worker function (the
lambdarun runtime on the local Lambda service), the activity runs ``f``."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest

import lambdarun
import lambdarun_temporal.plugin
from lambdarun.local.testing import local_stack_fixture, session_plugins
from lambdarun.testing import wait_for
from lambdarun_temporal.backend import TemporalBackend

# the Lambda side cannot import this module (pytest imports it by path): ship it by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

local_stack = local_stack_fixture(scope="module")

FUNCTION = "lambdarun-temporal-tests"


class ProjectError(ValueError):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self):
        return (type(self), (self.args[0], self.code))


def double(x):
    print(f"doubling {x}")
    return x * 2


def fail(code):
    raise ProjectError("failed on purpose", code)


def plugins() -> list[Any]:
    return session_plugins(lambdarun_temporal.plugin)


def activity_started_at(address: str, workflow_id: str) -> float | None:
    """When a worker started the workflow's activity (epoch seconds, as the Temporal server
    records it), or None while no worker runs it (or the workflow does not exist yet)."""
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.service import RPCError

    from lambdarun_temporal.testing import with_client

    async def started(client: Any) -> float | None:
        try:
            desc = await client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return None
        for activity in desc.raw_description.pending_activities:
            if activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                return activity.last_started_time.ToMicroseconds() / 1e6
        return None

    return with_client(address, started)


@pytest.fixture
def make_session(lambdarun_session: Callable[..., Any], local_stack: Any, temporal_server: Any) -> Callable[..., Any]:
    def factory(**temporal: Any) -> Any:
        overrides: dict[str, Any] = {
            "target": "local",
            "local": {"state_dir": str(local_stack.state_dir)},
            "progress": False,
            "temporal": {
                "address": temporal_server.address,
                "function_name": FUNCTION,
                "task_queue": f"lambdarun-{uuid.uuid4().hex[:8]}",
                "function_timeout": 20,
                **temporal,
            },
        }
        return lambdarun_session(*plugins(), overrides=overrides)

    return factory


def test_backend_is_registered_with_its_config(make_session):
    session = make_session()
    assert "temporal" in session.backends.ids()
    backend = session.backend("temporal")
    assert isinstance(backend, TemporalBackend)
    assert session.settings.section("temporal").idle_timeout == 1.0


@pytest.mark.timeout(90)
def test_run_returns_the_result_and_output(make_session):
    session = make_session()
    future = lambdarun.submit(double, 21, backend="temporal", session=session)
    assert future.result(timeout=60) == 42
    assert "doubling 21" in future.stdout


@pytest.mark.timeout(90)
def test_run_raises_the_original_exception_type(make_session):
    session = make_session()
    with pytest.raises(ProjectError) as info:
        lambdarun.run(fail, 7, backend="temporal", session=session)
    assert info.value.code == 7
    assert "failed on purpose" in (getattr(info.value, "remote_traceback", "") or "")


@pytest.mark.timeout(120)
def test_map_runs_many_calls_on_few_worker_invocations(make_session):
    session = make_session()
    results = list(lambdarun.map(double, range(20), backend="temporal", session=session))
    assert results == [x * 2 for x in range(20)]
    backend = session.backend("temporal")
    assert 1 <= backend.invocations <= 3


@pytest.fixture
def on_demand_server():
    """Stops the dev server the backend starts on demand (address unset, local target)."""
    from lambdarun_temporal.devserver import stop_shared_dev_server

    yield
    stop_shared_dev_server()


@pytest.mark.timeout(90)
def test_local_target_starts_a_dev_server_on_demand(make_session, on_demand_server):
    from lambdarun_temporal.devserver import shared_dev_server

    session = make_session(address=None)
    backend = session.backend("temporal")
    assert lambdarun.run(double, 5, backend="temporal", session=session) == 10
    server = shared_dev_server()
    assert backend.address == server.address and server.running


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(90)
def test_worker_returns_before_its_lambda_deadline(make_session):
    """A call longer than the worker function's life: the worker stops at deadline - buffer
    and returns normally (the local Lambda service does not have to kill it); the call
    times out with TaskTimeoutError."""
    from lambdarun.errors import TaskTimeoutError

    session = make_session(function_timeout=5, attempts=1)
    backend = session.backend("temporal")
    with pytest.raises(TaskTimeoutError):
        lambdarun.run(nap, 8, backend="temporal", session=session)
    deadline = time.monotonic() + 10
    while not backend.worker_summaries and time.monotonic() < deadline:
        time.sleep(0.1)
    summary = backend.worker_summaries[0]
    assert summary["stop_reason"] == "deadline"
    assert summary["seconds"] < 5


@pytest.mark.timeout(90)
def test_failing_worker_function_fails_pending_calls(make_session):
    """A worker function that cannot run (2 s timeout < 1.5 s shutdown buffer + 1 s of work)
    fails every time; after three failures the pending call gets the worker's error instead
    of hanging. (2 s, not 1 s: a cold start under load can take more than 1 s, and then the
    function times out before the handler can say why.)"""
    from lambdarun_temporal.backend import WorkerInvocationError

    session = make_session(function_timeout=2)
    with pytest.raises(WorkerInvocationError, match="LambdaTimeoutTooShortError"):
        lambdarun.run(double, 1, backend="temporal", session=session)


@pytest.mark.timeout(90)
def nap_the_first_time(marker, seconds):
    """Sleeps ``seconds`` the first time it runs (``marker`` does not exist yet), returns at
    once when it runs again: what a call cut by a worker's deadline does on its retry."""
    import os
    import time

    if os.path.exists(marker):
        return "ran again"
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return "ran once"


def test_call_cut_by_the_worker_deadline_runs_again_on_the_next_worker(make_session, tmp_path):
    """A 5 s worker function stops at 2.5 s and gives running calls 1 s more (graceful
    shutdown): a call that needs 3.9 s (within its 4 s timeout) is cut by that, whenever it
    started on that worker, and retried on a new worker invocation, where it succeeds."""
    session = make_session(function_timeout=5, timeout=4)
    backend = session.backend("temporal")
    marker = tmp_path / "started"
    call = lambdarun.submit(nap_the_first_time, str(marker), 3.9, backend="temporal", session=session)
    assert call.result(timeout=60) == "ran again"
    assert backend.invocations >= 2
    assert attempts_of(backend.address, call.task_id) >= 2


def attempts_of(address: str, workflow_id: str) -> int:
    from lambdarun_temporal.testing import with_client

    async def fetch(client: Any) -> int:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return max(e.activity_task_started_event_attributes.attempt for e in history.events
                   if e.HasField("activity_task_started_event_attributes"))

    return with_client(address, fetch)


def echo_size(blob):
    return blob + b"!"


@pytest.mark.timeout(90)
def test_large_argument_and_result_travel_through_storage(make_session):
    """3 MB each way: over Temporal's 2 MB payload limit, so both go through lambdarun
    storage (moto's S3 on the local target) and are deleted afterwards."""
    session = make_session()
    blob = b"x" * (3 * 1024 * 1024)
    assert lambdarun.run(echo_size, blob, backend="temporal", session=session) == blob + b"!"
    assert session.storage().list("lambdarun-temporal/") == []


def test_config_section_reads_environment(lambdarun_session):
    session = lambdarun_session(
        *plugins(),
        environ={"LAMBDARUN_TEMPORAL__IDLE_TIMEOUT": "2.5", "LAMBDARUN_TEMPORAL__TASK_QUEUE": "q1"},
    )
    section = session.settings.section("temporal")
    assert (section.idle_timeout, section.task_queue) == (2.5, "q1")
    assert section.address is None and section.namespace == "default"


def busy(seconds):
    """Python-level work: interruptible (a single blocking C call like time.sleep(20) is
    only interrupted when it returns)."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return seconds


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_cancel_cancels_the_workflow(make_session):
    session = make_session()
    backend = session.backend("temporal")
    future = lambdarun.submit(busy, 20, backend="temporal", session=session)
    wait_for(lambda: activity_started_at(backend.address, future.task_id), "a worker to pick the call up",
             timeout=60, interval=0.1)
    assert future.cancel()
    assert future.cancelled()

    from lambdarun_temporal.testing import with_client

    async def status(client: Any) -> str:
        for _ in range(50):
            desc = await client.get_workflow_handle(future.task_id).describe()
            if desc.status.name != "RUNNING":
                return desc.status.name
            await __import__("asyncio").sleep(0.1)
        return "RUNNING"

    assert with_client(backend.address, status) == "CANCELED"
    # the running call was interrupted: its worker went idle long before nap(20) would end
    deadline = time.monotonic() + 10
    while not backend.worker_summaries and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend.worker_summaries and backend.worker_summaries[0]["stop_reason"] == "idle"


@pytest.mark.timeout(60)
def test_unreachable_server_is_a_clear_error(make_session):
    from lambdarun_temporal.devserver import free_port

    session = make_session(address=f"127.0.0.1:{free_port()}")
    with pytest.raises(Exception) as info:
        lambdarun.run(double, 1, backend="temporal", session=session)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "[temporal] address" in notes
    assert session.backend("temporal").invocations == 0
