"""Workflows, activities and ``configure`` callbacks used by the Lambda worker tests.

Run as a script by :func:`conftest.run_handler` in a subprocess::

    python scenarios.py <scenario> <lambda timeout seconds>

It builds ``run_worker(VERSION, <scenario's configure>)``, calls the handler once with a
:class:`FakeLambdaContext`, and prints one JSON line: the handler's result or its error,
how long it took, and how much of the Lambda time was left when it returned. Markers
written by hooks and teardowns go to the file named by ``SCENARIO_MARKERS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, VersioningBehavior, WorkerDeploymentVersion

DEPLOYMENT = "lambdarun-temporal-tests"
BUILD_ID = "v1"
VERSION = WorkerDeploymentVersion(deployment_name=DEPLOYMENT, build_id=BUILD_ID)


@activity.defn
async def add_one(x: int) -> int:
    await asyncio.sleep(0.05)  # stands for an I/O call
    return x + 1


@activity.defn
def shout(text: str) -> str:  # a sync activity, run in the activity executor
    return text.upper()


@workflow.defn(versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class AddOne:
    @workflow.run
    async def run(self, x: int) -> int:
        return await workflow.execute_activity(
            add_one, x, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn(versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class Shout:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10)
        )


@activity.defn
async def effect(x: int) -> int:
    """A side effect counted in the file ``SCENARIO_EFFECTS``: one JSON line per body that
    ran to its end (workflow id, attempt, invocation tag, wall time)."""
    await asyncio.sleep(float(os.environ.get("SCENARIO_ACTIVITY_SECONDS", "1")))
    info = activity.info()
    line = json.dumps({"wid": info.workflow_id, "attempt": info.attempt,
                       "inv": os.environ.get("SCENARIO_INVOCATION", ""), "t": time.time()})
    with open(os.environ["SCENARIO_EFFECTS"], "a") as f:  # O_APPEND: whole lines
        f.write(line + "\n")
    return x + 1


@workflow.defn(versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class Effect:
    """One activity with a side effect; retried quickly when an attempt is lost."""

    @workflow.run
    async def run(self, x: int) -> int:
        return await workflow.execute_activity(
            effect,
            x,
            start_to_close_timeout=timedelta(seconds=4),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=1)
            ),
        )


def mark(text: str) -> None:
    path = os.environ.get("SCENARIO_MARKERS")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def _register(config) -> None:
    from concurrent.futures import ThreadPoolExecutor

    config.worker_config["workflows"] = [AddOne, Shout, Effect]
    config.worker_config["activities"] = [add_one, shout, effect]
    config.worker_config["activity_executor"] = ThreadPoolExecutor(16)
    config.worker_config["max_concurrent_activities"] = 16


def _hooks(config) -> None:
    def failing_hook() -> None:
        mark("hook1")
        raise RuntimeError("hook one failed")

    async def async_hook() -> None:
        mark("hook2")

    def sync_hook() -> None:
        mark("hook3")

    config.shutdown_hooks += [failing_hook, async_hook, sync_hook]


def configure_basic(config) -> None:
    _register(config)
    _hooks(config)


async def configure_coroutine(config) -> None:
    await asyncio.sleep(0)
    _register(config)
    _hooks(config)


async def configure_asyncgen(config):
    _register(config)
    mark("setup")

    async def hook() -> None:
        mark("hook")

    config.shutdown_hooks.append(hook)
    try:
        yield
    finally:
        mark("teardown")


@contextlib.asynccontextmanager
async def configure_context_manager(config):
    async for _ in configure_asyncgen(config):
        yield


def configure_chaos(config) -> None:
    """Four activities at a time, so a queue of slow ``Effect`` workflows drains for a while."""
    _register(config)
    config.worker_config["max_concurrent_activities"] = 4


def configure_no_idle(config) -> None:
    _register(config)
    _hooks(config)
    config.idle_timeout = None


def configure_slow_hooks(config) -> None:
    """Hooks that would run far past the deadline; idle exit off so the deadline is hit."""
    _register(config)
    config.idle_timeout = None

    def hangs() -> None:
        mark("hang-start")
        time.sleep(60)

    async def async_hangs() -> None:
        mark("async-hang-start")
        await asyncio.sleep(60)

    def last() -> None:
        mark("last")

    config.shutdown_hooks += [hangs, async_hangs, last]


def configure_bad_worker(config) -> None:
    """Worker() refuses a workflow class that is not a workflow."""
    _register(config)
    _hooks(config)
    config.worker_config["workflows"] = [dict]


def configure_bad_namespace(config) -> None:
    """Worker.run() fails: the namespace does not exist."""
    _register(config)
    _hooks(config)
    config.client_connect_config["namespace"] = "no-such-namespace"


def configure_unbuffered(config) -> None:
    """Graceful shutdown changed: the buffer must follow (3 + 1 + 0.5 s)."""
    _register(config)
    config.worker_config["graceful_shutdown_timeout"] = timedelta(seconds=3)
    mark(f"buffer-before:{config.shutdown_deadline_buffer.total_seconds()}")

    def report() -> None:
        mark(f"buffer-after:{config.shutdown_deadline_buffer.total_seconds()}")

    config.shutdown_hooks.append(report)


_exporter = None


def configure_otel(config) -> None:
    """Tracing with a batch processor that only exports on flush: spans are out only if
    the flush hook ran before the handler returned."""
    global _exporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import get_tracer_provider, set_tracer_provider
    from temporalio.contrib.opentelemetry import create_tracer_provider

    from lambdarun_temporal.lambda_worker.otel import apply_tracing

    if _exporter is None:
        _exporter = InMemorySpanExporter()
        provider = create_tracer_provider()
        provider.add_span_processor(BatchSpanProcessor(_exporter, schedule_delay_millis=600_000))
        set_tracer_provider(provider)
    _register(config)
    apply_tracing(config)
    get_tracer_provider().get_tracer("scenarios").start_span("invocation").end()

    def count() -> None:  # runs after the flush hook
        mark(f"spans:{len(_exporter.get_finished_spans())}")

    config.shutdown_hooks.append(count)


SCENARIOS = {
    name[len("configure_"):]: fn for name, fn in dict(globals()).items() if name.startswith("configure_")
}


def main() -> None:
    scenario, timeout = sys.argv[1], float(sys.argv[2])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from lambdarun_temporal.lambda_worker import run_worker
    from lambdarun_temporal.testing import FakeLambdaContext

    out: dict = {"scenario": scenario}
    try:
        handler = run_worker(VERSION, SCENARIOS[scenario])
        context = FakeLambdaContext(timeout=timeout)
        start = time.monotonic()
        try:
            out["result"] = handler({}, context)
        except Exception as exc:
            out["error_type"] = type(exc).__name__
            out["error"] = str(exc)
            out["error_notes"] = getattr(exc, "__notes__", [])
            out["error_mro"] = [c.__name__ for c in type(exc).__mro__]
        out["elapsed"] = time.monotonic() - start
        out["remaining_ms_at_return"] = context.get_remaining_time_in_millis()
    except Exception as exc:  # cold start failure
        out["cold_error_type"] = type(exc).__name__
        out["cold_error"] = str(exc)
    print(json.dumps(out), flush=True)
    # like a Lambda runtime, which never unwinds the interpreter between invocations: a worker
    # abandoned at its deadline (temporalio's core still holding its threads) can block
    # interpreter teardown, which is not what these scenarios test (the JSON line above is)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
