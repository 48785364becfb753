"""lambdarun's map and single call beside Lithops' localhost backend, both handler versions
(issue 20).

Lithops 3.8 (``benchmarks/requirements-reference.txt``) runs each task in local worker
processes (``localhost`` compute and storage backends; handler ``LocalhostHandlerV2`` by
default, ``LocalhostHandlerV1`` with ``localhost.version = 1``), in a child process of its own
(``_lithops_reference.py``). Ours: ``lambdarun.map`` / ``lambdarun.run`` with
``backend="covalent"`` on the embedded local target (a local Lambda service running AWS's
``awslambdaric`` in each environment, moto's S3), warm. The work: ``abs`` of 1,000 integers,
then single calls one after the other. The phases are interleaved (ours, v1, v2) and each is
measured the same way: wall time, and peak memory of the whole process tree.

Not like for like in one respect, stated in every row: Lithops' localhost backend runs
functions as plain local processes, ours goes through a Lambda API service and Lambda
runtime environments (what ``target="aws"`` does on AWS).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.local.testing import local_stack_fixture
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session

local_stack = local_stack_fixture(scope="module")
HERE = Path(__file__).resolve().parent
VERSIONS = (1, 2)


@pytest.fixture(scope="module")
def session(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    plugins: list[Any] = [lambdarun_covalent.plugin]
    if not any(name.startswith("lambdarun.local") for name in DEFAULT_PLUGINS):
        from lambdarun.local import plugin as local_plugin

        plugins.append(local_plugin)
    pm = make_plugin_manager(plugins, load_entrypoints=False, environ={})
    overrides = {"target": "local", "local": {"state_dir": str(local_stack.state_dir)}, "progress": False,
                 "log_level": "WARNING", "covalent": {"function_name": "lambdarun-lithops-bench"}}
    with Session(pm, overrides=overrides, environ={}, cwd=tmp_path_factory.mktemp("cfg")) as s:
        list(lambdarun.map(abs, range(-64, 0), backend="covalent", session=s))  # warm
        yield s


def run_lithops(version: int, tasks: int, calls: int) -> dict:
    cmd = [sys.executable, str(HERE / "_lithops_reference.py"), "--version", str(version), "--tasks", str(tasks),
           "--calls", str(calls)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise AssertionError(f"lithops v{version} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])


@pytest.mark.timeout(7200)
def test_map_and_single_call_beside_lithops(benchmark: Any, headline: Any, record_rss: None, session: Session,
                                            bench_size: Any, tree_memory: Any) -> None:
    if importlib.util.find_spec("lithops") is None:
        pytest.skip("lithops is not installed: pip install -r benchmarks/requirements-reference.txt")
    tasks, calls = bench_size(1000, 2), bench_size(20, 1)  # smoke: Lithops v2 takes seconds per task here
    ours: dict[str, Any] = {}
    theirs: dict[int, dict] = {}
    memory: dict[str, float | None] = {}

    def one_round() -> None:
        with tree_memory() as m:
            start = time.perf_counter()
            assert list(lambdarun.map(abs, range(-tasks, 0), backend="covalent", session=session)) == \
                list(range(tasks, 0, -1))
            ours["map_s"] = time.perf_counter() - start
            ours["call_s"] = []
            for i in range(calls):
                start = time.perf_counter()
                assert lambdarun.run(abs, -i - 1, backend="covalent", session=session) == i + 1
                ours["call_s"].append(time.perf_counter() - start)
        memory["ours"] = m.peak_mib
        for version in VERSIONS:
            with tree_memory() as m:
                theirs[version] = run_lithops(version, tasks, calls)
            memory[f"v{version}"] = m.peak_mib

    benchmark.pedantic(one_round, rounds=1, iterations=1)
    common = ("Lithops' localhost backend runs tasks as local processes; ours goes through the local Lambda "
              "service and its runtime environments. Memory: peak PSS of each phase's whole process tree.")
    for version in VERSIONS:
        ref = theirs[version]
        row = dict(
            reference=tasks / ref["map_s"], reference_name=f"Lithops {ref['lithops']} localhost, {ref['handler']}",
            reference_peak_rss_mib=memory[f"v{version}"],
            note=(f"map of {tasks} tiny tasks: ours {ours['map_s']:.2f} s, Lithops v{version} {ref['map_s']:.2f} s "
                  f"(its first call in a fresh executor {ref['first_call_s']:.2f} s). {common}"),
        )
        scenario = f"map of {tasks:,} tiny tasks beside Lithops localhost v{version}"
        if version == VERSIONS[0]:
            headline.set(scenario, tasks / ours["map_s"], "tasks/s", peak_rss_mib=memory["ours"], **row)
        else:
            headline.also(scenario, tasks / ours["map_s"], "tasks/s", **{k: v for k, v in row.items()
                                                                        if k != "reference_peak_rss_mib"})
        headline.also(
            f"single call, warm, beside Lithops localhost v{version}", statistics.median(ours["call_s"]) * 1000,
            "ms", reference=statistics.median(ref["call_s"]) * 1000 if ref["call_s"] else None,
            reference_name=f"Lithops {ref['lithops']} localhost, {ref['handler']}",
            note=(f"{calls} calls one after the other, median; ours {[round(x * 1000, 1) for x in ours['call_s']]} ms, "
                  f"Lithops v{version} {[round(x * 1000) for x in ref['call_s']]} ms, "
                  f"{ref.get('calls_lost', 0)} of its calls lost (no answer within {ref.get('call_timeout_s')} s)"),
        )
    benchmark.extra_info["lithops"] = theirs
    benchmark.extra_info["memory_by_phase_mib"] = memory
