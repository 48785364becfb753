"""Durable backend benchmarks: sequential steps persisted in SQLite, per-invocation cost, map.

Full run:

    python -m pytest benchmarks/test_durable.py --full-bench --benchmark-enable \
        --import-mode=importlib -p no:cacheprovider

The store is a SQLite file on disk (WAL, synchronous=FULL, the default) in the test's
tmp dir. Targets: >= 2000 steps/s, 10k steps no slower per step than 1k, <= 10 ms fixed
cost per invocation. ``aws_sdk_*`` runs the same handler on the AWS SDK's own local
runner for comparison (figures in the benchmark's extra_info).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lambdarun_durable import DurableContext, durable_execution
from lambdarun_durable.execution import DurableInvocationInput
from lambdarun_durable.service import DurableService
from lambdarun_durable.stores import SQLiteCheckpointStore

STEPS_PER_S_TARGET = 2000
FIXED_COST_TARGET_MS = 10.0


@durable_execution
def sequential(event: dict, ctx: DurableContext) -> int:
    total = 0
    for i in range(event["steps"]):
        total += ctx.step(lambda _, i=i: i, name="s")
    return total


@durable_execution
def mapped(event: dict, ctx: DurableContext) -> int:
    res = ctx.map(list(range(event["items"])), lambda c, x, i, items: c.step(lambda _: x * 2, name="double"))
    return sum(res.get_results())


@durable_execution
def one_step(event: dict, ctx: DurableContext) -> int:
    return ctx.step(lambda _: 1, name="one")


def _invoke(handler: Any, store: SQLiteCheckpointStore, service: DurableService, arn: str) -> dict:
    """One in-process invocation: load the execution once, hand its operations over."""
    return handler(service.in_process_input(arn), None)


def _prepared(store: SQLiteCheckpointStore, payload: dict) -> tuple:
    service = DurableService(store)
    arn = service.start_execution("bench", json.dumps(payload))
    event, _ = service.invocation_event(arn)
    return (event,), {}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteCheckpointStore(str(tmp_path / "bench.db"))
    yield s
    s.close()


def _run_steps(benchmark: Any, store: SQLiteCheckpointStore, steps: int, rounds: int) -> float:
    def setup() -> tuple:
        return _prepared(store, {"steps": steps})

    def target(event: dict) -> None:
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        out = sequential(inv, None)
        assert out["Status"] == "SUCCEEDED" and json.loads(out["Result"]) == sum(range(steps))

    benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1)
    mean = benchmark.stats.stats.mean if benchmark.stats else 0.0
    rate = steps / mean if mean else 0.0
    benchmark.extra_info.update(steps=steps, steps_per_s=round(rate), target_steps_per_s=STEPS_PER_S_TARGET)
    return rate


def test_sequential_steps_1k(benchmark: Any, store: SQLiteCheckpointStore, bench_size: Any, full_bench: bool) -> None:
    """1000 sequential steps, one invocation, every step persisted (batched) in SQLite."""
    steps = bench_size(1000, 50)
    rate = _run_steps(benchmark, store, steps, rounds=5 if full_bench else 1)
    if full_bench:
        assert rate >= STEPS_PER_S_TARGET, f"{rate:.0f} steps/s is under the {STEPS_PER_S_TARGET} target"


def test_sequential_steps_10k(benchmark: Any, store: SQLiteCheckpointStore, bench_size: Any, full_bench: bool) -> None:
    """10,000 sequential steps: per-step cost must not grow with history."""
    steps = bench_size(10_000, 100)
    rate = _run_steps(benchmark, store, steps, rounds=3 if full_bench else 1)
    if full_bench:
        assert rate >= STEPS_PER_S_TARGET, f"{rate:.0f} steps/s is under the {STEPS_PER_S_TARGET} target"
    benchmark.extra_info["persisted_records"] = len(store.load(store.list(limit=1)[0].execution_id).records)


def test_replay_10k_completed_steps(benchmark: Any, store: SQLiteCheckpointStore, bench_size: Any, full_bench: bool) -> None:
    """Re-invoking an execution whose 10k steps are all checkpointed (pure replay + load)."""
    steps = bench_size(10_000, 100)

    @durable_execution
    def replayed(event: dict, ctx: DurableContext) -> int:
        total = sum(ctx.step(lambda _, i=i: i, name="s") for i in range(event["steps"]))
        ctx.wait(__import__("lambdarun_durable.config", fromlist=["Duration"]).Duration.from_seconds(3600))
        return total

    service = DurableService(store)
    arn = service.start_execution("bench", json.dumps({"steps": steps}))
    assert _invoke(replayed, store, service, arn)["Status"] == "PENDING"

    benchmark.pedantic(lambda: _invoke(replayed, store, service, arn), rounds=3 if full_bench else 1, iterations=1)
    mean = benchmark.stats.stats.mean if benchmark.stats else 0.0
    benchmark.extra_info.update(steps=steps, replayed_steps_per_s=round(steps / mean) if mean else 0)


def test_invocation_fixed_cost(benchmark: Any, store: SQLiteCheckpointStore, full_bench: bool) -> None:
    """One invocation of a one-step handler: parse event, run, one durable write, respond."""

    def setup() -> tuple:
        return _prepared(store, {})

    def target(event: dict) -> None:
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        assert one_step(inv, None)["Status"] == "SUCCEEDED"

    benchmark.pedantic(target, setup=setup, rounds=200 if full_bench else 2, iterations=1, warmup_rounds=2)
    if benchmark.stats:
        median_ms = benchmark.stats.stats.median * 1000
        benchmark.extra_info.update(median_ms=round(median_ms, 3), target_ms=FIXED_COST_TARGET_MS)
        if full_bench:
            assert median_ms <= FIXED_COST_TARGET_MS


def test_map_1000_items(benchmark: Any, store: SQLiteCheckpointStore, bench_size: Any, full_bench: bool) -> None:
    """map over 1000 items, each item a child context with one step (3 records per item)."""
    items = bench_size(1000, 20)

    def setup() -> tuple:
        return _prepared(store, {"items": items})

    def target(event: dict) -> None:
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        out = mapped(inv, None)
        assert out["Status"] == "SUCCEEDED", out
        assert json.loads(out["Result"]) == 2 * sum(range(items))

    benchmark.pedantic(target, setup=setup, rounds=3 if full_bench else 1, iterations=1)
    mean = benchmark.stats.stats.mean if benchmark.stats else 0.0
    benchmark.extra_info.update(items=items, items_per_s=round(items / mean) if mean else 0)


def test_aws_sdk_runner_1k_steps_for_comparison(benchmark: Any, bench_size: Any, full_bench: bool) -> None:
    """The same 1000-step handler on aws-durable-execution-sdk-python's own local runner."""
    import aws_durable_execution_sdk_python as aws  # lambdarun-durable[test]
    import aws_durable_execution_sdk_python_testing.runner as runner_mod
    steps = bench_size(1000, 20)

    @aws.durable_execution
    def handler(event: dict, ctx: Any) -> int:
        return sum(ctx.step(lambda _, i=i: i, name="s") for i in range(event["steps"]))

    def target() -> None:
        with runner_mod.DurableFunctionTestRunner(handler) as r:
            res = r.run(input=json.dumps({"steps": steps}), execution_timeout=600)
            assert json.loads(res.result) == sum(range(steps))

    start = time.perf_counter()
    benchmark.pedantic(target, rounds=1, iterations=1)
    elapsed = time.perf_counter() - start
    benchmark.extra_info.update(steps=steps, steps_per_s=round(steps / elapsed))
