"""A 50-electron lattice on a real Covalent server: ``executor="awslambda"`` (lambdarun's
executor, the local target) against Covalent's own Dask executor, same server, same run.

    pytest benchmarks/test_covalent_lattice.py --full-bench --benchmark-enable

The server is ``covalent start`` with its Dask cluster (``lambdarun_covalent.testing``),
private directories, 127.0.0.1. Each round dispatches the lattice and waits for its result
(``ct.dispatch`` + ``ct.get_result(wait=True)``); one warm-up dispatch per executor first
(the Lambda function and its environments, Dask's workers). Target (issue 17): the awslambda
lattice is no slower than the Dask one.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import cloudpickle
import pytest

ct = pytest.importorskip("covalent")

from lambdarun.local.testing import local_stack_fixture  # noqa: E402
from lambdarun_covalent.testing import covalent_server_fixture  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(900)

local_stack = local_stack_fixture(scope="module")
covalent_server = covalent_server_fixture(
    "module", cluster=True, executor_config={"function_name": "lambdarun-covalent-lattice-bench"}
)


def square(x):
    return x * x


on_lambda = ct.electron(square, executor="awslambda")
on_dask = ct.electron(square, executor="dask")


def _lattice(electron: Any, n: int) -> Any:
    def fan_out(count: int) -> list:
        return [electron(i) for i in range(count)]

    fan_out.__name__ = f"fan_out_{n}"
    return ct.lattice(fan_out, workflow_executor="local")


def _dispatch(server: Any, lattice: Any, n: int) -> float:
    started = time.perf_counter()
    dispatch_id = ct.dispatch(lattice, dispatcher_addr=server.address)(n)
    result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=server.address)
    took = time.perf_counter() - started
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == [i * i for i in range(n)]
    return took


def test_lattice_of_50_electrons_awslambda_vs_dask(benchmark: Any, headline: Any, covalent_server: Any,
                                                    bench_size: Any, full_bench: bool) -> None:
    n = bench_size(50, 5)
    rounds = 5 if full_bench else 1
    lam, dask = _lattice(on_lambda, n), _lattice(on_dask, n)
    _dispatch(covalent_server, lam, n)  # warm-up: function created, environments started
    _dispatch(covalent_server, dask, n)  # warm-up: Dask workers
    dask_samples: list[float] = []

    def one_round() -> None:
        _dispatch(covalent_server, lam, n)

    def interleaved_dask_round(*_: Any) -> tuple[tuple, dict]:
        # the Dask lattice runs between the rounds of ours, so both see the same machine load
        dask_samples.append(_dispatch(covalent_server, dask, n))
        return (), {}

    benchmark.pedantic(one_round, setup=interleaved_dask_round, rounds=rounds, iterations=1)
    median = headline.median_s()
    headline.set(
        f"covalent: lattice of {n} electrons on a real Covalent server, awslambda (local target) vs dask",
        None if median is None else median * 1000,
        reference=statistics.median(dask_samples) * 1000,
        reference_name="Covalent 0.240 dask executor (covalent start's own cluster)",
        target=statistics.median(dask_samples) * 1000,
        reference_samples_ms=[round(x * 1000, 1) for x in dask_samples],
        note="dispatch to result (ct.dispatch + ct.get_result(wait=True)), warm; the dask lattice "
             "runs interleaved with ours; target: no slower than dask",
    )
