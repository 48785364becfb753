"""map and parallel with each completion config, concurrency limits, nesting and replay."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lambdarun_durable import (
    BatchCompletionError,
    ChildContextError,
    BatchItemStatus,
    BatchResult,
    DurableContext,
    ParallelBranch,
    complete_batch,
    continue_batch,
    durable_execution,
    durable_parallel_branch,
)
from lambdarun_durable.concurrency.models import CompletionReason
from lambdarun_durable.config import (
    CompletionConfig,
    CompletionOutcome,
    Duration,
    MapConfig,
    NestingType,
    ParallelConfig,
    StepConfig,
)
from lambdarun_durable.exceptions import ValidationError
from lambdarun_durable.retries import RetryPresets

pytestmark = pytest.mark.timeout(30)

NO_RETRY = StepConfig(retry_strategy=RetryPresets.none())


def item_fn(ctx: DurableContext, item: int, index: int, items: Any) -> int:
    def work(_: Any) -> int:
        if item < 0:
            raise ValueError(f"negative {item}")
        return item * 10

    return ctx.step(work, name=f"work-{index}", config=NO_RETRY)


def run_map(runner_factory: Any, items: list[int], config: MapConfig | None) -> BatchResult:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> dict:
        res = ctx.map(items, item_fn, name="batch", config=config)
        return res.to_dict()

    result = runner_factory(handler).run()
    assert result.error is None, result.error
    return BatchResult.from_dict(result.result_value)


def test_map_all_successful_default_fails_fast(runner_factory: Any) -> None:
    res = run_map(runner_factory, [1, -2, 3], MapConfig(max_concurrency=1))
    assert res.completion_reason is CompletionReason.FAILURE_TOLERANCE_EXCEEDED
    assert [i.status for i in res.all] == [BatchItemStatus.SUCCEEDED, BatchItemStatus.FAILED]
    with pytest.raises(Exception) as ei:
        res.throw_if_error()
    assert "negative -2" in str(ei.value)


def test_map_all_completed_runs_every_item(runner_factory: Any) -> None:
    res = run_map(runner_factory, [1, -2, 3, -4], MapConfig(completion_config=CompletionConfig.all_completed()))
    assert res.completion_reason is CompletionReason.ALL_COMPLETED
    assert res.get_results() == [10, 30]
    assert res.failure_count == 2 and res.success_count == 2
    assert [e.type for e in res.get_errors()] == ["aws_durable_execution_sdk_python.exceptions.StepError"] * 2


def test_map_first_successful(runner_factory: Any) -> None:
    res = run_map(runner_factory, [-1, 5, 6, 7], MapConfig(max_concurrency=1, completion_config=CompletionConfig.first_successful()))
    assert res.completion_reason is CompletionReason.MIN_SUCCESSFUL_REACHED
    assert res.get_results() == [50]
    assert res.total_count == 2  # items 2 and 3 were never started


def test_map_min_successful_and_tolerated_failures(runner_factory: Any) -> None:
    res = run_map(
        runner_factory,
        [-1, 2, -3, 4, 5, 6],
        MapConfig(max_concurrency=1, completion_config=CompletionConfig(min_successful=3, tolerated_failure_count=2)),
    )
    assert res.completion_reason is CompletionReason.MIN_SUCCESSFUL_REACHED
    assert res.get_results() == [20, 40, 50]

    res = run_map(
        runner_factory,
        [-1, -2, -3, 4],
        MapConfig(max_concurrency=1, completion_config=CompletionConfig(tolerated_failure_count=1)),
    )
    assert res.completion_reason is CompletionReason.FAILURE_TOLERANCE_EXCEEDED
    assert res.failure_count == 2


def test_map_tolerated_failure_percentage(runner_factory: Any) -> None:
    res = run_map(
        runner_factory,
        [1, -2, 3, 4],
        MapConfig(completion_config=CompletionConfig(tolerated_failure_percentage=25)),
    )
    assert res.completion_reason is CompletionReason.ALL_COMPLETED
    res = run_map(
        runner_factory,
        [1, -2, -3, 4],
        MapConfig(max_concurrency=1, completion_config=CompletionConfig(tolerated_failure_percentage=25)),
    )
    assert res.completion_reason is CompletionReason.FAILURE_TOLERANCE_EXCEEDED


def test_map_custom_should_complete(runner_factory: Any) -> None:
    def quorum(status: Any) -> Any:
        if status.success_count >= 2:
            return complete_batch()
        if status.failure_count >= 2:
            return complete_batch(CompletionOutcome.FAILED)
        return continue_batch()

    res = run_map(runner_factory, [1, -1, 2, 3], MapConfig(max_concurrency=1, completion_config=CompletionConfig(should_complete=quorum)))
    assert res.completion_reason is CompletionReason.CUSTOM_COMPLETION_SUCCEEDED
    assert res.get_results() == [10, 20]

    res = run_map(runner_factory, [-1, -2, 3], MapConfig(max_concurrency=1, completion_config=CompletionConfig(should_complete=quorum)))
    assert res.completion_reason is CompletionReason.CUSTOM_COMPLETION_FAILED
    assert res.status is BatchItemStatus.FAILED
    with pytest.raises(ChildContextError, match="negative -1"):
        res.throw_if_error()
    only_quorum = BatchResult(res.all[:0], CompletionReason.CUSTOM_COMPLETION_FAILED)
    with pytest.raises(BatchCompletionError):
        only_quorum.throw_if_error()


def test_min_successful_validated_against_total(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        try:
            ctx.map([1], item_fn, config=MapConfig(completion_config=CompletionConfig(min_successful=2)))
        except ValidationError as e:
            return str(e)
        return "?"

    assert "min_successful cannot be greater" in runner_factory(handler).run().result_value


def test_map_max_concurrency_bounds_in_flight(runner_factory: Any) -> None:
    lock = threading.Lock()
    live = [0]
    peak = [0]
    gate = threading.Barrier(2, timeout=5)

    def fn(ctx: DurableContext, item: int, index: int, items: Any) -> int:
        def work(_: Any) -> int:
            with lock:
                live[0] += 1
                peak[0] = max(peak[0], live[0])
            try:
                gate.wait()  # two items must really run together
            except threading.BrokenBarrierError:
                pass
            with lock:
                live[0] -= 1
            return item

        return ctx.step(work, name="w")

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> list:
        return ctx.map(list(range(6)), fn, config=MapConfig(max_concurrency=2)).get_results()

    assert runner_factory(handler).run().result_value == list(range(6))
    assert peak[0] == 2


def test_map_items_suspend_and_replay(runner_factory: Any) -> None:
    runs: dict[int, int] = {}
    lock = threading.Lock()

    def fn(ctx: DurableContext, item: int, index: int, items: Any) -> int:
        def count(_: Any) -> int:
            with lock:
                runs[item] = runs.get(item, 0) + 1
            return item

        v = ctx.step(count, name="first")
        ctx.wait(Duration.from_seconds(60 * (item + 1)), name="nap")
        return ctx.step(lambda _: v + 100, name="second")

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> list:
        return ctx.map([0, 1, 2], fn, name="naps", config=MapConfig(item_namer=lambda item, i: f"item-{item}")).get_results()

    result = runner_factory(handler).run()
    assert result.result_value == [100, 101, 102]
    assert runs == {0: 1, 1: 1, 2: 1}
    assert len(result.invocations) >= 2
    names = [e["Name"] for e in result.history if e["EventType"] == "ContextStarted"]
    # items run concurrently and each commits its step before the next operation (as AWS's
    # SDK does), so which item's START reaches the store first is up to the threads (on AWS
    # too: its SDK queues them from the item threads); the map's own START comes first
    assert names[0] == "naps"
    assert sorted(names[1:]) == ["item-0", "item-1", "item-2"]
    subtypes = {e["Name"]: e["SubType"] for e in result.history if e["EventType"] == "ContextStarted"}
    assert subtypes == {"naps": "Map", "item-0": "MapIteration", "item-1": "MapIteration", "item-2": "MapIteration"}


def test_parallel_branches_and_named_branches(runner_factory: Any) -> None:
    @durable_parallel_branch(name="fetch-user")
    def fetch_user(ctx: DurableContext, uid: str) -> dict:
        return ctx.step(lambda _: {"id": uid}, name="load_user")

    def orders(ctx: DurableContext) -> list:
        ctx.wait(Duration.from_minutes(1))
        return ctx.step(lambda _: ["o1"], name="load_orders")

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> list:
        res = ctx.parallel(
            [fetch_user("u1"), ParallelBranch(orders, name="orders"), lambda c: 3],
            name="load",
        )
        return res.get_results()

    result = runner_factory(handler).run()
    assert result.result_value == [{"id": "u1"}, ["o1"], 3]
    started = [(e["Name"], e["SubType"]) for e in result.history if e["EventType"] == "ContextStarted"]
    # branches run concurrently; their STARTs reach the store in thread order (see above)
    assert started[0] == ("load", "Parallel")
    assert sorted(started[1:]) == [
        ("fetch-user", "ParallelBranch"), ("orders", "ParallelBranch"), ("parallel-branch-2", "ParallelBranch")
    ]


@pytest.mark.parametrize(
    ("config", "expected_reason", "expected_results"),
    [
        (CompletionConfig.all_successful(), CompletionReason.FAILURE_TOLERANCE_EXCEEDED, None),
        (CompletionConfig.all_completed(), CompletionReason.ALL_COMPLETED, [1, 3]),
        (CompletionConfig.first_successful(), CompletionReason.MIN_SUCCESSFUL_REACHED, [1]),
    ],
)
def test_parallel_completion_presets(runner_factory: Any, config: CompletionConfig, expected_reason: Any, expected_results: Any) -> None:
    def bad(ctx: DurableContext) -> None:
        ctx.step(lambda _: (_ for _ in ()).throw(RuntimeError("x")), name="bad", config=NO_RETRY)

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> dict:
        res = ctx.parallel(
            [lambda c: c.step(lambda _: 1, name="one"), bad, lambda c: c.step(lambda _: 3, name="three")],
            config=ParallelConfig(max_concurrency=1, completion_config=config),
        )
        return res.to_dict()

    res = BatchResult.from_dict(runner_factory(handler).run().result_value)
    assert res.completion_reason is expected_reason
    if expected_results is not None:
        assert res.get_results() == expected_results


def test_flat_nesting_has_no_branch_contexts(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> list:
        res = ctx.map([1, 2], item_fn, name="flat", config=MapConfig(nesting_type=NestingType.FLAT))
        ctx.wait(Duration.from_seconds(1))
        return res.get_results()

    result = runner_factory(handler).run()
    assert result.result_value == [10, 20]
    assert [e["Name"] for e in result.history if e["EventType"] == "ContextStarted"] == ["flat"]
    flat = result.get_context("flat")
    assert sorted(c.name for c in flat.child_operations) == ["work-0", "work-1"]
