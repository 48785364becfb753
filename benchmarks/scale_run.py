"""One streaming ``lambdarun.map`` of N tiny tasks in a fresh process on the embedded local
target, measured from the caller's side: tasks/s, the caller's peak RSS and CPU per task, and
the CPU per task of the process tree under the caller (the local Lambda service's process and
every Lambda environment): the load-independent figures, as the wall time on a shared machine
depends on what else runs (``load1`` is the 1-minute load average before the timed map).

    python benchmarks/scale_run.py 1000 [--chunksize N] [--state-dir DIR] [--in-process]

Prints one JSON object. ``benchmarks/test_scale.py`` runs it (smoke mode: a few hundred
tasks); the 100,000-task figure is this script with 100000.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time


def tiny(x: int) -> int:
    return x + 1


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each process under this one (the local service's process,
    every environment's supervisor and runtime), by pid."""
    import psutil

    out = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            times = proc.cpu_times()
        except psutil.Error:  # exited meanwhile
            continue
        out[proc.pid] = times.user + times.system
    return out


def invocations(session) -> int:
    """Invocations the local service has run in the environments it keeps (its extension
    API's ``GET /_lambdarun/functions``): the difference over the timed map is how many
    invocations its tasks took (the map batches up to ``chunksize`` tasks per invocation)."""
    import urllib.request

    stack = session.target.stack
    with urllib.request.urlopen(stack.signed_request(stack.lambda_url + "/_lambdarun/functions"), timeout=30) as r:
        doc = json.loads(r.read())
    return sum(e["invocations"] for fn in doc["functions"] for e in fn["environments"])


def timed_map(session, tasks: int, chunksize: int | None) -> dict:
    """One streaming map of ``tasks`` tiny tasks, timed, with the CPU it cost on each side."""
    import lambdarun

    load1 = os.getloadavg()[0]
    invoked0 = invocations(session)
    tree0 = tree_cpu()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    total = 0
    for value in lambdarun.map(tiny, (i for i in range(tasks)), chunksize=chunksize, session=session):
        total += value
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    tree1 = tree_cpu()
    invoked = invocations(session) - invoked0
    # processes that ended during the map are not counted: a warm run ends none. With
    # --in-process the service runs in this process: its CPU is the caller's, the tree's
    # is the environments' alone
    tree = sum(cpu - tree0.get(pid, 0.0) for pid, cpu in tree1.items())
    assert total == tasks * (tasks + 1) // 2, total
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "seconds": round(wall, 3),
        "tasks_per_s": round(tasks / wall, 1),
        "ms_per_task": round(1000 * wall / tasks, 4),
        "caller_cpu_ms_per_task": round(1000 * cpu / tasks, 4),
        "service_cpu_ms_per_task": round(1000 * tree / tasks, 4),
        "invocations": invoked,
        # environments (supervisor + runtime) started during the timed map: cold starts
        "processes_started": len(tree1.keys() - tree0.keys()),
        "processes_ended": len(tree0.keys() - tree1.keys()),
        "load1": round(load1, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tasks", type=int)
    parser.add_argument("--chunksize", type=int, default=None)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--in-process", action="store_true",
                        help="[local] out_of_process = false: the stack's servers in threads of this process")
    parser.add_argument("--warm", type=int, default=200, help="tasks run first (stack start, cold environments)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="timed maps, one after the other; the figures are the median round's, all rounds listed")
    args = parser.parse_args()

    import lambdarun
    from lambdarun.session import Session

    state = args.state_dir or tempfile.mkdtemp(prefix="lambdarun-scale-")
    session = Session(overrides={"target": "local", "backend": "covalent", "progress": False,
                                 "local": {"state_dir": state, "out_of_process": not args.in_process}})
    try:
        first = time.perf_counter()
        assert lambdarun.run(tiny, 1, session=session) == 2
        first_call = time.perf_counter() - first
        assert sum(lambdarun.map(tiny, range(args.warm), chunksize=args.chunksize, session=session)) == sum(
            range(1, args.warm + 1))
        rounds = [timed_map(session, args.tasks, args.chunksize) for _ in range(args.rounds)]
        result = sorted(rounds, key=lambda r: r["seconds"])[len(rounds) // 2]
        print(json.dumps({
            "tasks": args.tasks,
            "chunksize": args.chunksize,
            "out_of_process": not args.in_process,
            **result,
            "rounds_tasks_per_s": [r["tasks_per_s"] for r in rounds],
            "caller_peak_rss_mib": round(vm_hwm_mib(), 1),
            "first_call_s": round(first_call, 3),
            "pid": os.getpid(),
        }))
    finally:
        session.close()


if __name__ == "__main__":
    main()
