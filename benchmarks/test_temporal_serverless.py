"""Temporal Serverless Workers on the local target: the real dev server's worker controller
invokes the worker function (role + External ID through the local STS, Event Invoke on the
local Lambda service), for ``lambdarun_temporal.lambda_worker`` ("ours") and the reference
``temporalio.contrib.aws.lambda_worker`` ("reference"), same handler code
(``lambdarun_temporal/_serverless_app``: one workflow, one activity), same server, same stack.

Per implementation, a fresh function/deployment version:

* **cold_one**: one workflow while no worker runs (every earlier invocation has returned;
  the server may invoke a version as it becomes current, so the test waits for that one to
  end); ``first_invoke_s`` = from the client's ``start_workflow`` to the handler's entry
  in the function (the server saw the backlog, assumed the role through STS, Event-invoked;
  the local Lambda ran it in its environment, warm after the first one), ``drain_s`` = to
  its result;
* **cold_drain**: ``N`` workflows while no worker runs: ``first_invoke_s``, ``drain_s``;
* **warm_drain**: ``N`` more right after (workers may still poll: ``first_invoke_s`` is None
  when no new invocation was needed).

Smoke mode (the test suite): N = 5. Full run (N = 200, figures in ``extra_info``)::

    python -m pytest benchmarks/test_temporal_serverless.py --full-bench --benchmark-enable -s
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local import LocalStack
from lambdarun.local.testing import local_stack_fixture
from lambdarun_temporal.devserver import DevServer, serverless_workers_environment
from lambdarun_temporal.serverless_testing import ServerlessSetup, run_workflows

local_stack = local_stack_fixture(scope="module", max_concurrency=16)

IMPLS = ["ours", "reference"]
#: the worker function's timeout: the reference runs until its deadline (no idle exit), and
#: each cold round waits for every worker to end
FUNCTION_TIMEOUT = 15


@pytest.fixture(scope="module")
def sw_server(local_stack: LocalStack) -> Iterator[DevServer]:
    endpoints = {"lambda": local_stack.endpoints.lambda_, "sts": local_stack.endpoints.moto}
    env = serverless_workers_environment(endpoints, local_stack.region, local_stack.credentials.environment())
    with DevServer(worker_controller=True, environment=env) as server:
        yield server


def _first_invoke_after(setup: ServerlessSetup, since: float, before: int) -> float | None:
    later = [t for t, _ in setup.invocation_times()[before:] if t >= since]
    return (min(later) - since) if later else None


def _batch(setup: ServerlessSetup, n: int, prefix: str, timeout: float) -> dict[str, Any]:
    before = len(setup.invocation_times())
    names = [f"{prefix}{i}" for i in range(n)]
    started, results = asyncio.run(run_workflows(setup.server.address, setup.task_queue, names, timeout))
    done = time.time() - started
    assert results == [f"{name}@v1" for name in names]
    first = _first_invoke_after(setup, started, before)
    return {"n": n, "drain_s": round(done, 3),
            "first_invoke_s": None if first is None else round(first, 3),
            "invocations": len(setup.invocation_times()) - before}


@pytest.mark.parametrize("impl", IMPLS)
def test_serverless_first_invoke_and_drain(benchmark: Any, impl: str, local_stack: LocalStack, sw_server: DevServer,
                                           tmp_path: Path, bench_size: Any) -> None:
    n = bench_size(200, 5)
    setup = ServerlessSetup(local_stack, sw_server, tmp_path, impl=impl, function_timeout=FUNCTION_TIMEOUT)
    setup.deploy("v1")
    rows: dict[str, Any] = {}

    def run() -> None:
        # the server may invoke a new current version before any workflow: wait until no
        # worker is left, so the first workflow finds none
        setup.wait_no_worker(FUNCTION_TIMEOUT + 30)
        rows["cold_one"] = _batch(setup, 1, "c", timeout=120)
        setup.wait_no_worker(FUNCTION_TIMEOUT + 30)
        rows["cold_drain"] = _batch(setup, n, "d", timeout=600)
        rows["warm_drain"] = _batch(setup, n, "w", timeout=600)  # right after: workers may still poll

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({"impl": impl, "n": n, **rows,
                                 "invocations_total": len(setup.invocation_times())})
    print(f"\n[serverless {impl}] {rows}")
    assert rows["cold_one"]["first_invoke_s"] is not None  # the server invoked the function
