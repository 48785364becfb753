"""Durable backend benchmarks: sequential steps persisted in SQLite, per-invocation cost, map.

Full run:

    python -m pytest benchmarks/test_durable.py --full-bench --benchmark-enable \
        --import-mode=importlib -p no:cacheprovider

Every row names its durability rule, because that decides the figure:

* **per step, fsync** -- the default (as AWS's SDK): each step's result is committed before
  the step returns; the SQLite store's default ``synchronous=FULL`` fsyncs every commit, so
  a committed step survives a killed process *and* power loss. One fsync per step.
* **per step, no fsync** -- the same commits with ``synchronous=NORMAL`` (WAL): a committed
  step survives a killed process, not power loss (the OS may still hold it). This is what
  the test runner uses.
* **batched** -- ``checkpoint_batching=True``: one commit per 1,000 records (or 1 s, or a
  durability point such as the end of the invocation); a killed process loses the steps
  since the last commit (they run again), nothing reported is ever ahead of its commit.
* The reference, AWS's in-process runner (``aws-durable-execution-sdk-python-testing``),
  keeps its checkpoints in memory: nothing survives its process.

The store is a SQLite file on the test's tmp dir (ext4 here). Targets: >= 2000 steps/s,
10k steps no slower per step than 1k, <= 10 ms fixed cost per invocation, per-step
committed >= 10x AWS's runner (issue 20: the per-step rows carry that target, the batched
ones the 2,000 steps/s). The same handlers (imports changed only) run on AWS's runner in the
same test, for the ratio. These rows run the engine in-process on a SQLite file; the same
handler through the local Lambda service's durable API (an HTTP request per step) is
``test_durable_service.py``'s.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from lambdarun_durable import DurableContext, durable_execution
from lambdarun_durable.config import Duration
from lambdarun_durable.execution import DurableInvocationInput
from lambdarun_durable.service import DurableService
from lambdarun_durable.stores import SQLiteCheckpointStore

STEPS_PER_S_TARGET = 2000
FIXED_COST_TARGET_MS = 10.0
PER_STEP_NOISE = 0.05  # "10k no slower per step than 1k", within this measurement noise


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


#: mode id -> (SQLite synchronous, checkpoint batching, how the row names its durability rule)
MODES = {
    "per-step-fsync": ("FULL", False, "every step committed before it returns, fsync per commit (SQLite "
                       "synchronous=FULL): survives a killed process and power loss"),
    "per-step-no-fsync": ("NORMAL", False, "every step committed before it returns, no fsync (SQLite WAL, "
                          "synchronous=NORMAL): survives a killed process, not power loss"),
    "batched": ("FULL", True, "checkpoint_batching=True: one fsync'd commit per 1,000 records; a killed process "
                "re-runs the steps since the last commit"),
}
_AWS_SECONDS: dict[tuple, float] = {}


def _aws_seconds_cached(handler: str, payload: dict, expected: int, rounds: int) -> float:
    """The AWS runner's figure for this workload, measured once per test session."""
    key = (handler, json.dumps(payload, sort_keys=True), rounds)
    if key not in _AWS_SECONDS:
        _AWS_SECONDS[key] = aws_runner_seconds(handler, payload, expected, rounds)
    return _AWS_SECONDS[key]


def _run_steps(benchmark: Any, store: SQLiteCheckpointStore, steps: int, rounds: int, batching: bool = False) -> float | None:
    def setup() -> tuple:
        return _prepared(store, {"steps": steps})

    def target(event: dict) -> None:
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        inv.batching = batching
        out = sequential(inv, None)
        assert out["Status"] == "SUCCEEDED" and json.loads(out["Result"]) == sum(range(steps))

    benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1)
    stats = getattr(benchmark.stats, "stats", None) if benchmark.stats else None
    return steps / stats.median if stats else None


# --- the AWS SDK's own local runner, on the same handlers (imports changed only) -------------


def _aws_handlers() -> dict[str, Any]:
    import aws_durable_execution_sdk_python as aws  # lambdarun-durable[test]

    @aws.durable_execution
    def aws_sequential(event: dict, ctx: Any) -> int:
        total = 0
        for i in range(event["steps"]):
            total += ctx.step(lambda _, i=i: i, name="s")
        return total

    @aws.durable_execution
    def aws_mapped(event: dict, ctx: Any) -> int:
        res = ctx.map(list(range(event["items"])), lambda c, x, i, items: c.step(lambda _: x * 2, name="double"))
        return sum(res.get_results())

    @aws.durable_execution
    def aws_one_step(event: dict, ctx: Any) -> int:
        return ctx.step(lambda _: 1, name="one")

    return {"sequential": aws_sequential, "mapped": aws_mapped, "one_step": aws_one_step}


def aws_runner_seconds(handler: str, payload: dict, expected: int, rounds: int) -> float:
    """Median wall time of a whole execution on aws-durable-execution-sdk-python-testing's
    ``DurableFunctionTestRunner`` (start, invocations, completion)."""
    import aws_durable_execution_sdk_python_testing.runner as runner_mod

    fn = _aws_handlers()[handler]
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        with runner_mod.DurableFunctionTestRunner(fn) as r:
            res = r.run(input=json.dumps(payload), execution_timeout=600)
        samples.append(time.perf_counter() - start)
        assert json.loads(res.result) == expected, res
    return statistics.median(samples)


REFERENCE_NAME = "aws-durable-execution-sdk-python-testing local runner"


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("full_steps", [1000, 5000])
def test_sequential_steps(benchmark: Any, headline: Any, record_rss: None, tmp_path: Path, mode: str,
                          full_steps: int, bench_size: Any, full_bench: bool) -> None:
    """N sequential steps in one invocation under one durability rule (see the module
    docstring); the same workflow on AWS's in-process runner (in memory) as the reference."""
    synchronous, batching, rule = MODES[mode]
    steps = bench_size(full_steps, 20)
    store = SQLiteCheckpointStore(str(tmp_path / f"{mode}.db"), synchronous=synchronous)
    try:
        rounds = (5 if full_steps <= 1000 else 2) if full_bench else 1
        rate = _run_steps(benchmark, store, steps, rounds=rounds, batching=batching)
        commits = store.load(store.list(limit=1)[0].execution_id).version
    finally:
        store.close()
    ref_rounds = (3 if full_steps <= 1000 else 1) if full_bench else 1
    ref_s = _aws_seconds_cached("sequential", {"steps": steps}, sum(range(steps)), rounds=ref_rounds)
    # per-step commits: issue 20's target, 10x the reference; batched: the absolute target
    target = STEPS_PER_S_TARGET if batching else 10 * steps / ref_s
    headline.set(f"durable: {steps} sequential steps, {mode} ({'batched' if batching else 'per-step'} commits)",
                 rate, "steps/s", reference=steps / ref_s, reference_name=REFERENCE_NAME,
                 target=target, target_op=">=", steps=steps, commits_per_execution=commits,
                 note=f"ours: {rule}. In-process (the engine on a SQLite file, no Lambda API between). Target: "
                      f"{'>= 2,000 steps/s' if batching else '10x the reference (issue 20)'}. The reference keeps "
                      "its checkpoints in memory (none survive its process).")


@pytest.fixture
def normal_store(tmp_path: Path) -> Any:
    """Per-step commits without fsync (``synchronous=NORMAL``): rows that measure the engine's
    per-step cost rather than the disk's fsync latency."""
    s = SQLiteCheckpointStore(str(tmp_path / "bench-normal.db"), synchronous="NORMAL")
    yield s
    s.close()


@pytest.mark.timeout(1800)  # full size: AWS's runner alone takes minutes for 10k steps on a loaded machine
def test_sequential_steps_10k(benchmark: Any, headline: Any, record_rss: None, normal_store: SQLiteCheckpointStore,
                              bench_size: Any, full_bench: bool) -> None:
    """10,000 sequential steps, every step committed (no fsync): per-step cost must not grow
    with history (compared with 1000 steps measured in the same test on the same store)."""
    store = normal_store
    steps = bench_size(10_000, 100)
    small = steps // 10
    rate = _run_steps(benchmark, store, steps, rounds=5 if full_bench else 1)
    persisted = len(store.load(store.list(limit=1)[0].execution_id).records)
    small_s = []
    for _ in range(10 if full_bench else 1):
        (event,), _ = _prepared(store, {"steps": small})
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        start = time.perf_counter()
        assert sequential(inv, None)["Status"] == "SUCCEEDED"
        small_s.append(time.perf_counter() - start)
    small_rate = small / statistics.median(small_s)
    # the AWS runner on the same two workflows (one round of 10k: about a minute)
    ref_rate = steps / aws_runner_seconds("sequential", {"steps": steps}, sum(range(steps)), rounds=1)
    ref_small_rate = small / aws_runner_seconds("sequential", {"steps": small}, sum(range(small)), rounds=3)
    headline.set(f"durable: {steps} sequential steps, per-step-no-fsync (per-step commits)", rate, "steps/s",
                 target=10 * ref_rate, target_op=">=", reference=ref_rate, reference_name=REFERENCE_NAME, steps=steps,
                 persisted_records=persisted, small_steps_per_s=round(small_rate),
                 reference_small_steps_per_s=round(ref_small_rate))
    if rate is not None:
        q = statistics.quantiles(small_s, n=4) if len(small_s) >= 2 else [small_s[0]] * 3
        spread = 100 * (q[2] - q[0]) / statistics.median(small_s)
        headline.also(f"durable: per-step cost at {steps} steps / at {small} steps", small_rate / rate, "x",
                      reference=ref_small_rate / ref_rate, reference_name=REFERENCE_NAME,
                      target=1 + PER_STEP_NOISE, note=(
                          f"{small} steps: {small_rate:,.0f} steps/s; {steps} steps: {rate:,.0f} steps/s (same "
                          f"store, same test). Target 'no slower per step' with a {PER_STEP_NOISE:.0%} allowance "
                          f"for run-to-run noise; the interquartile spread of the {small}-step runs was "
                          f"{spread:.0f} % of their median. AWS runner: {ref_small_rate:,.0f} steps/s at {small}, "
                          f"{ref_rate:,.0f} steps/s at {steps}."))


def test_replay_10k_completed_steps(benchmark: Any, headline: Any, record_rss: None,
                                    normal_store: SQLiteCheckpointStore, bench_size: Any, full_bench: bool) -> None:
    """Re-invoking an execution whose 10k steps are all checkpointed (pure replay + load;
    the steps were written with per-step commits, no fsync: durability is not measured here)."""
    store = normal_store
    steps = bench_size(10_000, 100)

    @durable_execution
    def replayed(event: dict, ctx: DurableContext) -> int:
        total = sum(ctx.step(lambda _, i=i: i, name="s") for i in range(event["steps"]))
        ctx.wait(Duration.from_seconds(3600))
        return total

    service = DurableService(store)
    arn = service.start_execution("bench", json.dumps({"steps": steps}))
    assert _invoke(replayed, store, service, arn)["Status"] == "PENDING"

    benchmark.pedantic(lambda: _invoke(replayed, store, service, arn), rounds=3 if full_bench else 1, iterations=1)
    median = headline.median_s()
    headline.set(f"durable: replay of {steps} completed steps (load + replay)",
                 None if median is None else steps / median, "steps/s", steps=steps)


def test_invocation_fixed_cost(benchmark: Any, headline: Any, record_rss: None, store: SQLiteCheckpointStore,
                               full_bench: bool) -> None:
    """One invocation of a one-step handler: parse event, run, two durable writes, respond."""

    def setup() -> tuple:
        return _prepared(store, {})

    def target(event: dict) -> None:
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        assert one_step(inv, None)["Status"] == "SUCCEEDED"

    benchmark.pedantic(target, setup=setup, rounds=200 if full_bench else 2, iterations=1, warmup_rounds=2)
    headline.set("durable: per-invocation fixed cost (one-step handler; the step's and the invocation's end "
                 "committed with fsync)", target=FIXED_COST_TARGET_MS,
                 note="parse the event, run the step, commit it (fsync), commit the end (fsync), answer; the "
                      "execution was started before")


def _our_runner_run(reuse: Any = None) -> float:
    from lambdarun_durable.testing import DurableFunctionTestRunner

    start = time.perf_counter()
    if reuse is not None:
        res = reuse.run(input="{}")
    else:
        with DurableFunctionTestRunner(one_step) as r:
            res = r.run(input="{}")
    elapsed = time.perf_counter() - start
    assert json.loads(res.result) == 1
    return elapsed


def _aws_runner_run(reuse: Any = None) -> float:
    import aws_durable_execution_sdk_python_testing.runner as runner_mod

    start = time.perf_counter()
    if reuse is not None:
        res = reuse.run(input="{}", execution_timeout=600)
    else:
        with runner_mod.DurableFunctionTestRunner(_aws_handlers()["one_step"]) as r:
            res = r.run(input="{}", execution_timeout=600)
    elapsed = time.perf_counter() - start
    assert json.loads(res.result) == 1
    return elapsed


def test_one_step_execution_end_to_end(benchmark: Any, headline: Any, record_rss: None, full_bench: bool) -> None:
    """The same thing measured on both sides: a one-step execution through each test runner.

    Row 1, "runner created and closed": ``with Runner(handler) as r: r.run(...)`` on both
    sides. AWS's figure is dominated by its runner's shutdown (its checkpoint thread polls for
    stop every 0.1 s) -- that is what a test using its runner pays per runner. Ours includes
    creating a SQLite file in a temporary folder and closing it.

    Row 2, "runner reused": ``r.run(...)`` alone on a runner kept open, on both sides: start
    the execution, invoke, commit the step (ours: per-step, SQLite synchronous=NORMAL, no
    fsync; AWS's: in memory), complete, build the result.
    """
    import aws_durable_execution_sdk_python_testing.runner as runner_mod

    from lambdarun_durable.testing import DurableFunctionTestRunner

    rounds = 20 if full_bench else 1
    benchmark.pedantic(_our_runner_run, rounds=rounds, iterations=1)
    ref_created = statistics.median(_aws_runner_run() for _ in range(rounds if full_bench else 1))
    median = headline.median_s()
    headline.set("durable: one-step execution end to end, runner created and closed (both test runners)",
                 None if median is None else median * 1000, "ms", reference=ref_created * 1000,
                 reference_name=REFERENCE_NAME,
                 note="with Runner(handler) as r: r.run() on both sides; AWS's runner spends most of it stopping "
                      "its checkpoint thread (0.1 s poll)")
    with DurableFunctionTestRunner(one_step) as ours, runner_mod.DurableFunctionTestRunner(_aws_handlers()["one_step"]) as aws:
        _our_runner_run(ours), _aws_runner_run(aws)  # warm
        n = 50 if full_bench else 1
        our_reused = statistics.median(_our_runner_run(ours) for _ in range(n))
        aws_reused = statistics.median(_aws_runner_run(aws) for _ in range(n))
    headline.also("durable: one-step execution end to end, runner reused (run() only, both test runners)",
                  our_reused * 1000, "ms", reference=aws_reused * 1000, reference_name=REFERENCE_NAME,
                  note="r.run() on an open runner: start, invoke, commit the step (ours: per-step, no fsync; "
                       "AWS: in memory), complete, build the result")


def test_map_1000_items(benchmark: Any, headline: Any, record_rss: None, store: SQLiteCheckpointStore,
                        bench_size: Any, full_bench: bool) -> None:
    """map over 1000 items, each item a child context with one step (3 records per item),
    default durability: each item's step and child context committed (fsync) before they return."""
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
    median = headline.median_s()
    ref_s = aws_runner_seconds("mapped", {"items": items}, 2 * sum(range(items)), rounds=3 if full_bench else 1)
    headline.set(f"durable: map of {items} items (one step each), per-step-fsync (per-operation commits)",
                 None if median is None else items / median, "items/s", reference=items / ref_s,
                 reference_name=REFERENCE_NAME, items=items)


# --- instrumentation plugins (durable_execution(plugins=...)) ---------------------------------


def _plugin_steps_handler(pkg: str) -> Any:
    """N sequential steps under a plugin that receives every hook and does nothing."""
    import importlib

    sdk = importlib.import_module(pkg)
    plugin_mod = importlib.import_module(f"{pkg}.plugin")

    class Noop(plugin_mod.DurableInstrumentationPlugin):
        def on_operation_change(self, info: Any) -> None:
            pass

    class Factory:
        def create_plugin(self, info: Any) -> Any:
            return Noop()

    @sdk.durable_execution(plugins=[Factory()])
    def handler(event: dict, ctx: Any) -> int:
        total = 0
        for i in range(event["steps"]):
            total += ctx.step(lambda _, i=i: i, name="s")
        return total

    return handler


def _runner_seconds(runner_cls: Any, handler: Any, steps: int) -> float:
    start = time.perf_counter()
    with runner_cls(handler) as r:
        res = r.run(input=json.dumps({"steps": steps}), execution_timeout=600)
    elapsed = time.perf_counter() - start
    assert json.loads(res.result) == sum(range(steps)), res
    return elapsed


@pytest.mark.timeout(1800)
def test_steps_with_an_instrumentation_plugin(benchmark: Any, headline: Any, record_rss: None,
                                              bench_size: Any, full_bench: bool) -> None:
    """1,000 sequential steps with a no-op instrumentation plugin, through each test runner.

    A registered plugin makes both engines snapshot the whole operation map for
    ``on_operation_change`` at each checkpoint (AWS's SDK: per checkpoint response), so the cost
    per step grows with the number of operations. Ours: per-step commits, SQLite
    synchronous=NORMAL (the test runner's store: survives a killed process, not power loss);
    AWS's: in memory."""
    import aws_durable_execution_sdk_python_testing.runner as runner_mod

    from lambdarun_durable.testing import DurableFunctionTestRunner

    steps = bench_size(1000, 20)
    rounds = 3 if full_bench else 1
    ours = _plugin_steps_handler("lambdarun_durable")
    benchmark.pedantic(lambda: _runner_seconds(DurableFunctionTestRunner, ours, steps), rounds=rounds, iterations=1)
    theirs = _plugin_steps_handler("aws_durable_execution_sdk_python")
    ref_s = statistics.median(_runner_seconds(runner_mod.DurableFunctionTestRunner, theirs, steps) for _ in range(rounds))
    median = headline.median_s()
    headline.set(f"durable: {steps} sequential steps with a no-op instrumentation plugin (both test runners; "
                 "ours per-step commits, no fsync)",
                 None if median is None else steps / median, "steps/s", reference=steps / ref_s,
                 reference_name=REFERENCE_NAME, steps=steps,
                 note="whole execution through each runner; the plugin receives every hook")
