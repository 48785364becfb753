"""lambdarun's map and single call beside Lithops' localhost backend, both handler versions
(issue 20).

Lithops 3.8 (``benchmarks/requirements-reference.txt``) runs each task in local worker
processes (``localhost`` compute and storage backends; handler ``LocalhostHandlerV2`` by
default, ``LocalhostHandlerV1`` with ``localhost.version = 1``), in a child process of its own
(``_lithops_reference.py``) with its own ``TMPDIR`` and ``HOME`` (Lithops keeps its jobs,
storage, runner and logs under ``$TMPDIR/lithops-$USER``, shared by every Lithops run of the
user otherwise), removed afterwards with any process still running out of it. Ours:
``lambdarun.map`` / ``lambdarun.run`` with ``backend="covalent"`` on the embedded local target
(a local Lambda service running AWS's ``awslambdaric`` in each environment, moto's S3), warm.
The work: ``abs`` of 1,000 integers (v1) or 200 (v2, which starts a Python process per task,
~5 tasks/s on 2 cores; ours runs the same 200 beside it, and the row label says so), then 20
single calls one after the other. Phases are interleaved (ours, v1, ours, v2) for 2 rounds and
each is measured the same way: wall time, and peak memory of the whole process tree; each
round's load is in the note.

Not like for like in one respect, stated in every row: Lithops' localhost backend runs
functions as plain local processes, ours goes through a Lambda API service and Lambda
runtime environments (what ``target="aws"`` does on AWS).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
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
CALL_TIMEOUT_S = 60.0  # a single call unanswered this long is counted as lost


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


def _kill_left_behind(folder: str) -> None:
    """Kill the processes still running Lithops' runner out of ``folder``, or with ``folder`` as
    their ``TMPDIR`` (Lithops' cleaner, ``python -m lithops.scripts.cleaner``): its task processes
    and its cleaner start sessions of their own, so killing the child's process group misses them."""
    marker = f"TMPDIR={folder}\0".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if folder.encode() in cmdline or marker in environ:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_lithops(version: int, tasks: int, calls: int, *, deadline_s: float) -> dict:
    """One Lithops phase in a child process of its own, isolated: its own temp folder (Lithops'
    localhost backend keeps jobs, storage, runner and logs under ``$TMPDIR/lithops-$USER``, and
    its metadata cache under ``~/.lithops``), removed afterwards with any process left in it."""
    cmd = [sys.executable, str(HERE / "_lithops_reference.py"), "--version", str(version), "--tasks", str(tasks),
           "--calls", str(calls), "--call-timeout", str(CALL_TIMEOUT_S), "--map-timeout", str(deadline_s)]
    folder = tempfile.mkdtemp(prefix=f"lambdarun-lithops-v{version}-")
    env = {**os.environ, "TMPDIR": folder, "HOME": folder}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=deadline_s + 2 * CALL_TIMEOUT_S + 60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"lithops v{version} did not finish in time:\n{stderr[-4000:]}") from None
    finally:
        _kill_left_behind(folder)
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        raise AssertionError(f"lithops v{version} failed ({proc.returncode}):\n{stderr[-4000:]}")
    result = json.loads([x for x in stdout.splitlines() if x.startswith("{")][-1])
    if result["calls_lost"]:
        result["stderr_tail"] = stderr[-4000:]  # the threads' stacks when the call was given up
    return result


def _ours(session: Session, tasks: int, calls: int) -> dict[str, Any]:
    start = time.perf_counter()
    assert list(lambdarun.map(abs, range(-tasks, 0), backend="covalent", session=session)) == list(range(tasks, 0, -1))
    map_s = time.perf_counter() - start
    call_s = []
    for i in range(calls):
        start = time.perf_counter()
        assert lambdarun.run(abs, -i - 1, backend="covalent", session=session) == i + 1
        call_s.append(time.perf_counter() - start)
    return {"map_s": map_s, "call_s": call_s}


def _spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    return "[" + ", ".join(f"{v * scale:.{digits}f}" for v in values) + "]"


@pytest.mark.timeout(1800)
def test_map_and_single_call_beside_lithops(benchmark: Any, headline: Any, record_rss: None, session: Session,
                                            bench_size: Any, tree_memory: Any) -> None:
    if importlib.util.find_spec("lithops") is None:
        pytest.skip("lithops is not installed: pip install -r benchmarks/requirements-reference.txt")
    # Lithops' v2 handler starts one Python process per task (~3-5 tasks/s on 2 cores): its map
    # is 200 tasks, and ours is measured on the same 200 beside it; v1 and ours on 1,000.
    tasks = {1: bench_size(1000, 4), 2: bench_size(200, 2)}
    calls, rounds = bench_size(20, 1), bench_size(2, 1)
    ours: dict[int, list[dict]] = {1: [], 2: []}  # by the version beside which it ran
    theirs: dict[int, list[dict]] = {1: [], 2: []}
    memory: dict[str, float | None] = {}
    loads: dict[int, list] = {1: [], 2: []}

    def one_round() -> None:
        for version in VERSIONS:  # ours, v1, ours, v2: each side of a row runs next to the other
            loads[version].append([round(x, 2) for x in os.getloadavg()])
            with tree_memory() as m:
                ours[version].append(_ours(session, tasks[version], calls))
            memory["ours"] = max(memory.get("ours") or 0, m.peak_mib or 0) or None
            with tree_memory() as m:
                theirs[version].append(run_lithops(version, tasks[version], calls,
                                                   deadline_s=max(60.0, tasks[version] * 2.0)))
            memory[f"v{version}"] = max(memory.get(f"v{version}") or 0, m.peak_mib or 0) or None

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    common = ("Lithops' localhost backend runs tasks as local processes; ours goes through the local Lambda "
              "service and its runtime environments. Memory: peak PSS of each phase's whole process tree.")
    for version in VERSIONS:
        n, refs, mine = tasks[version], theirs[version], ours[version]
        ref_rate = statistics.median(n / r["map_s"] for r in refs)
        our_rate = statistics.median(n / o["map_s"] for o in mine)
        name = f"Lithops {refs[0]['lithops']} localhost, {refs[0]['handler']}"
        row = dict(
            reference=ref_rate, reference_name=name, reference_peak_rss_mib=memory[f"v{version}"],
            note=(f"map of {n} tiny tasks, {len(refs)} interleaved rounds (ours then Lithops v{version}), median; "
                  f"ours {_spread([o['map_s'] for o in mine])} s, Lithops v{version} "
                  f"{_spread([r['map_s'] for r in refs])} s (its first call in a fresh executor "
                  f"{_spread([r['first_call_s'] for r in refs])} s); 1-minute load at each round's start "
                  f"{[x[0] for x in loads[version]]}. {common}"),
        )
        scenario = f"map of {n:,} tiny tasks beside Lithops localhost v{version}"
        if n != tasks[1]:
            scenario += f" ({n:,}, not {tasks[1]:,}: v2 starts a Python process per task; ours on the same {n:,})"
        if version == VERSIONS[0]:
            headline.set(scenario, our_rate, "tasks/s", peak_rss_mib=memory["ours"], **row)
        else:
            headline.also(scenario, our_rate, "tasks/s",
                          **{k: v for k, v in row.items() if k != "reference_peak_rss_mib"})
        our_calls = [x for o in mine for x in o["call_s"]]
        ref_calls = [x for r in refs for x in r["call_s"]]
        lost = sum(r["calls_lost"] for r in refs)
        skipped = sum(r["calls_not_attempted"] for r in refs)
        headline.also(
            f"single call, warm, beside Lithops localhost v{version}", statistics.median(our_calls) * 1000,
            "ms", reference=statistics.median(ref_calls) * 1000 if ref_calls else None, reference_name=name,
            note=(f"{calls} calls one after the other per round, {len(refs)} interleaved rounds, median of all; "
                  f"ours {_spread(our_calls, 1000, 1)} ms, Lithops v{version} {_spread(ref_calls, 1000, 0)} ms; "
                  f"{lost} of its calls lost (no answer within {CALL_TIMEOUT_S:.0f} s: the v2 handler sometimes "
                  f"never starts a job queued right after the previous one finished), {skipped} not attempted "
                  f"after a lost one (that executor runs nothing more)"),
        )
    benchmark.extra_info["lithops"] = theirs
    benchmark.extra_info["ours"] = ours
    benchmark.extra_info["memory_by_phase_mib"] = memory
