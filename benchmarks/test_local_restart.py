"""What persistence costs a shared local stack (``lambdarun local up``), and how long a restart
takes to restore it (pytest-benchmark).

* accepting an ``Event`` invocation (it is written to ``events/`` before the 202), against an
  embedded stack that keeps nothing;
* an S3 ``PutObject`` of 1 KiB (appended to moto's journal), same comparison;
* ``LocalStack.start()`` of a shared stack that restores N functions and M S3 objects.

    .venv/bin/python -m pytest benchmarks/test_local_restart.py --full-bench --benchmark-enable
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local import LocalStack
from lambdarun.local.testing import create_function

NOOP = "def handler(event, context):\n    return None\n"


@pytest.fixture(scope="module", params=["shared (persists)", "embedded (keeps nothing)"])
def stack(request: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    shared = request.param.startswith("shared")
    with LocalStack(tmp_path_factory.mktemp("bench-restart"), reuse=False, shared=shared,
                    stop_at_exit=False) as s:
        yield s


def test_event_accept(benchmark: Any, headline: Any, stack: LocalStack, full_bench: bool) -> None:
    lam = stack.client("lambda", retries={"total_max_attempts": 1})
    name = f"bench-event-{'shared' if stack.shared else 'embedded'}"
    create_function(lam, name, NOOP)
    # reserved concurrency 0: events never run (each is accepted, then recorded as a
    # ZeroReservedConcurrency failure in the background), so acceptance is what is measured
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    try:
        benchmark.pedantic(lambda: lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}"),
                           rounds=300 if full_bench else 1, iterations=1, warmup_rounds=10 if full_bench else 0)
        median = headline.median_s()
        headline.set(f"Event accepted, {'shared stack (written to disk)' if stack.shared else 'embedded stack'}",
                     None if median is None else median * 1000)
    finally:
        lam.delete_function(FunctionName=name)


def test_s3_put(benchmark: Any, headline: Any, stack: LocalStack, full_bench: bool) -> None:
    s3 = stack.client("s3")
    bucket = f"bench-put-{'shared' if stack.shared else 'embedded'}"
    s3.create_bucket(Bucket=bucket)
    counter = iter(range(10**9))
    benchmark.pedantic(lambda: s3.put_object(Bucket=bucket, Key=f"k{next(counter)}", Body=b"x" * 1024),
                       rounds=300 if full_bench else 1, iterations=1, warmup_rounds=10 if full_bench else 0)
    median = headline.median_s()
    headline.set(f"S3 PutObject 1 KiB, {'shared stack (journaled)' if stack.shared else 'embedded stack'}",
                 None if median is None else median * 1000)


def test_restart_restores(benchmark: Any, headline: Any, tmp_path: Path, bench_size: Any) -> None:
    functions, objects = bench_size(50, 2), bench_size(2000, 10)
    state = tmp_path / "state"
    first = LocalStack(state, reuse=False, shared=True, stop_at_exit=False).start()
    lam, s3 = first.client("lambda"), first.client("s3")
    for i in range(functions):
        create_function(lam, f"restore-{i}", NOOP, Tags={"i": str(i)})
    s3.create_bucket(Bucket="bench-restore")
    for i in range(objects):
        s3.put_object(Bucket="bench-restore", Key=f"objects/{i}", Body=b"x" * 1024)
    first.stop()
    stacks: list[LocalStack] = []

    def restart() -> None:
        stacks.append(LocalStack(state, reuse=False, shared=True, stop_at_exit=False).start())

    def stop_previous() -> None:
        while stacks:
            stacks.pop().stop()

    try:
        benchmark.pedantic(restart, setup=stop_previous, rounds=3, iterations=1)
        assert len(stacks[-1].client("lambda").list_functions(MaxItems=50)["Functions"]) == min(functions, 50)
    finally:
        stop_previous()
    median = headline.median_s()
    headline.set(f"restart of `local up` restoring {functions} functions and {objects} S3 objects",
                 None if median is None else median * 1000)
