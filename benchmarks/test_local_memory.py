"""What the local target's memory limit costs (pytest-benchmark): the cold start of an
environment with and without it, how far past ``MemorySize`` a fast allocator gets before the
watchdog kills it, and the watchdog's CPU while an environment is idle.

    .venv/bin/python -m pytest benchmarks/test_local_memory.py --full-bench --benchmark-enable
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lambdarun.local import LocalStack
from lambdarun.local.testing import create_function

NOOP = "def handler(event, context):\n    return None\n"


@pytest.fixture(scope="module", params=[True, False], ids=["limit-on", "limit-off"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("bench-memory"), reuse=False, stop_at_exit=False,
                    memory_limit=request.param) as s:
        yield s


def test_cold_start_with_memory_limit(benchmark: Any, headline: Any, stack: LocalStack, full_bench: bool) -> None:
    lam = stack.client("lambda", retries={"total_max_attempts": 1})
    create_function(lam, "bench-mem-cold", NOOP)
    counter = iter(range(10_000))

    def new_generation() -> None:  # a configuration change retires the warm environments
        lam.update_function_configuration(FunctionName="bench-mem-cold", Description=f"gen {next(counter)}")

    def call() -> None:
        lam.invoke(FunctionName="bench-mem-cold", Payload=b"{}")["Payload"].read()

    try:
        benchmark.pedantic(call, setup=new_generation, rounds=15 if full_bench else 1, iterations=1)
    finally:
        lam.delete_function(FunctionName="bench-mem-cold")
    state = "on" if stack.memory_limit else "off"
    headline.set(f"local target: cold start, memory limit {state} (cost of the limit per environment start)")


ALLOCATE = """
def handler(event, context):
    block = b"x" * (event["mb"] * 1024 * 1024)
    return len(block)
"""


@pytest.mark.parametrize("stack", [True], ids=["limit-on"], indirect=True)  # measures the limit: on only
def test_memory_limit_overshoot_and_idle_cpu(benchmark: Any, headline: Any, stack: LocalStack,
                                            full_bench: bool) -> None:
    """A 128 MB function, warm and idle, copies 1 GB in one go: the REPORT's Max Memory Used (the measured
    peak at the kill) minus 128 MB is how far past the limit it got. Then the CPU the
    supervisor (its memory watchdog) burns per second while the environment is idle."""
    assert stack.memory_limit
    lam = stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=60)
    create_function(lam, "bench-mem-oom", ALLOCATE, memory_size=128, timeout=30)
    overshoots: list[int] = []

    def call() -> None:
        r = lam.invoke(FunctionName="bench-mem-oom", Payload=json.dumps({"mb": 1024}), LogType="Tail")
        assert json.loads(r["Payload"].read())["errorType"] == "Runtime.OutOfMemory"
        used = re.search(r"Max Memory Used: (\d+) MB", base64.b64decode(r["LogResult"]).decode())
        overshoots.append(int(used.group(1)) - 128)

    try:
        def warm_and_idle() -> None:  # the allocation hits a warm environment, idle 0.6 s
            lam.invoke(FunctionName="bench-mem-oom", Payload=json.dumps({"mb": 1}))
            time.sleep(0.6)

        benchmark.pedantic(call, setup=warm_and_idle, rounds=10 if full_bench else 1, iterations=1)
        lam.invoke(FunctionName="bench-mem-oom", Payload=json.dumps({"mb": 1}))  # a warm, idle one
        service = stack.service
        pids = service.environment_pids() if service is not None else []
        idle_cpu = _idle_cpu_ms_per_s(pids, 5.0 if full_bench else 1.0)
    finally:
        lam.delete_function(FunctionName="bench-mem-oom")
    headline.set("local target: memory limit overshoot of a fast allocator (1 GB memset, 128 MB function)",
                 max(overshoots), "MB", note="REPORT Max Memory Used at the kill minus MemorySize")
    if idle_cpu is not None:
        headline.also("local target: memory watchdog CPU of one idle environment", idle_cpu, "ms CPU/s")


def _idle_cpu_ms_per_s(pids: list[int], seconds: float) -> float | None:
    """CPU (user + system) the environments' supervisors use per second, per environment."""
    def ticks() -> int:  # user + system clock ticks (schedstat is not always kept)
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total

    if not pids:
        return None
    before = ticks()
    time.sleep(seconds)
    return (ticks() - before) * 1000 / os.sysconf("SC_CLK_TCK") / seconds / len(pids)
