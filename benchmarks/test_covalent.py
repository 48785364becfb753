"""Benchmarks of the covalent backend on the local target (local Lambda service + moto S3).

    pytest benchmarks/test_covalent.py --benchmark-enable

Targets (issue 5): warm round trip of a tiny task <= 20 ms median (the original executor's
floor is 5 s: S3 upload, Event invoke, head_object every poll_freq); map of 1000 tiny tasks
>= 200 tasks/s on 2 cores; a 10 MB argument (spilled to S3 by reference).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.local.testing import local_stack_fixture
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session

local_stack = local_stack_fixture(scope="module")

MB = 1024 * 1024


def _plugins() -> list[Any]:
    out: list[Any] = [lambdarun_covalent.plugin]
    if not any(name.startswith("lambdarun.local") for name in DEFAULT_PLUGINS):  # until the core does
        from lambdarun.local import plugin as local_plugin

        out.append(local_plugin)
    return out


@pytest.fixture(scope="module")
def session(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    pm = make_plugin_manager(_plugins(), load_entrypoints=False, environ={})
    overrides = {
        "target": "local",
        "local": {"state_dir": str(local_stack.state_dir)},
        "progress": False,
        "log_level": "WARNING",
        "covalent": {"function_name": "lambdarun-covalent-bench"},
    }
    with Session(pm, overrides=overrides, environ={}, cwd=tmp_path_factory.mktemp("cfg")) as s:
        # warm: function created, environments started, clients connected
        list(lambdarun.map(abs, range(-64, 0), backend="covalent", session=s))
        yield s


def test_warm_round_trip_tiny_task(benchmark: Any, session: Session) -> None:
    result = benchmark(lambdarun.run, abs, -1, backend="covalent", session=session)
    assert result == 1


def test_map_1000_tiny_tasks(benchmark: Any, session: Session) -> None:
    def run_map() -> list[int]:
        return list(lambdarun.map(abs, range(-1000, 0), backend="covalent", session=session))

    results = benchmark.pedantic(run_map, rounds=3, iterations=1, warmup_rounds=0)
    assert results == list(range(1000, 0, -1))
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["tasks_per_second"] = round(1000 / stats.stats.mean, 1)


def test_10mb_argument(benchmark: Any, session: Session) -> None:
    blob = os.urandom(10 * MB)
    result = benchmark.pedantic(
        lambdarun.run, args=(len, blob), kwargs={"backend": "covalent", "session": session}, rounds=5, iterations=1
    )
    assert result == 10 * MB
