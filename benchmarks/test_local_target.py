"""Benchmarks of the local Lambda service through boto3 (pytest-benchmark).

Targets on a 2-core machine: warm round trip of a no-op handler <= 5 ms median; cold start
of a new environment <= 300 ms; plus invocations per second with 8 concurrent callers.

    .venv/bin/python -m pytest benchmarks/test_local_target.py --benchmark-only
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from lambdarun.local import LocalStack
from lambdarun.local.testing import create_function

WARM_TARGET_MS = 5
COLD_TARGET_MS = 300

NOOP = "def handler(event, context):\n    return None\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("bench-local"), reuse=False, stop_at_exit=False,
                    max_concurrency=16) as s:
        yield s


@pytest.fixture(scope="module")
def lam(stack: LocalStack) -> Any:
    return stack.client("lambda", retries={"total_max_attempts": 1}, max_pool_connections=16)


@pytest.fixture(scope="module")
def noop(lam: Any) -> Iterator[str]:
    create_function(lam, "bench-noop", NOOP)
    lam.invoke(FunctionName="bench-noop")  # cold start outside the measurement
    yield "bench-noop"
    lam.delete_function(FunctionName="bench-noop")


def test_warm_round_trip(benchmark: Any, headline: Any, record_rss: None, lam: Any, noop: str,
                         full_bench: bool) -> None:
    def call() -> None:
        resp = lam.invoke(FunctionName=noop, Payload=b"{}")
        resp["Payload"].read()

    for _ in range(20 if full_bench else 1):
        call()
    benchmark.pedantic(call, rounds=500 if full_bench else 1, iterations=1, warmup_rounds=10 if full_bench else 0)
    headline.set("local target: warm round trip, no-op handler (boto3 invoke)", target=WARM_TARGET_MS)


ECHO = "def handler(event, context):\n    return event\n"


@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024], ids=["64KiB", "1MiB"])
def test_warm_round_trip_with_payload(benchmark: Any, headline: Any, record_rss: None, lam: Any, size: int,
                                      full_bench: bool) -> None:
    """Echo a JSON string of ``size`` bytes both ways (request and response)."""
    name = f"bench-echo-{size}"
    create_function(lam, name, ECHO, memory_size=512)
    body = json.dumps("x" * (size - 2)).encode()

    def call() -> None:
        out = lam.invoke(FunctionName=name, Payload=body)["Payload"].read()
        assert len(out) == len(body)

    try:
        call()
        benchmark.pedantic(call, rounds=50 if full_bench else 1, iterations=1, warmup_rounds=3 if full_bench else 0)
    finally:
        lam.delete_function(FunctionName=name)
    headline.set(f"local target: warm round trip, echo {size // 1024} KiB each way")


def test_cold_start(benchmark: Any, headline: Any, record_rss: None, lam: Any, full_bench: bool) -> None:
    create_function(lam, "bench-cold", NOOP)
    counter = iter(range(10_000))

    def new_generation() -> None:
        # any configuration change retires the warm environments, like Lambda does
        lam.update_function_configuration(FunctionName="bench-cold", Description=f"gen {next(counter)}")

    def call() -> None:
        lam.invoke(FunctionName="bench-cold", Payload=b"{}")["Payload"].read()

    try:
        benchmark.pedantic(call, setup=new_generation, rounds=15 if full_bench else 1, iterations=1)
    finally:
        lam.delete_function(FunctionName="bench-cold")
    headline.set("local target: cold start of a new environment (first invoke after a config change)",
                 target=COLD_TARGET_MS)


def test_throughput_8_callers(benchmark: Any, headline: Any, record_rss: None, lam: Any, noop: str,
                              bench_size: Any, full_bench: bool) -> None:
    per_caller = bench_size(100, 2)
    callers = 8
    pool = ThreadPoolExecutor(callers)

    def caller() -> None:
        for _ in range(per_caller):
            lam.invoke(FunctionName=noop, Payload=b"{}")["Payload"].read()

    rates: list[float] = []

    def batch() -> None:
        start = time.perf_counter()
        for f in [pool.submit(caller) for _ in range(callers)]:
            f.result()
        rates.append(per_caller * callers / (time.perf_counter() - start))

    batch()  # scale out to 8 warm environments first
    try:
        benchmark.pedantic(batch, rounds=3 if full_bench else 1, iterations=1)
    finally:
        pool.shutdown()
    rate = statistics.median(rates[1:])  # rates[0] is the scale-out batch
    headline.set(f"local target: invocations/s, {callers} concurrent callers (no-op handler)", rate,
                 "invocations/s", invocations_per_batch=per_caller * callers, cpus=os.cpu_count())
