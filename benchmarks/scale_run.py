"""One streaming ``lambdarun.map`` of N tiny tasks in a fresh process on the embedded local
target, measured from the caller's side: tasks/s, the caller's peak RSS and CPU per task.

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tasks", type=int)
    parser.add_argument("--chunksize", type=int, default=None)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--in-process", action="store_true",
                        help="[local] out_of_process = false: the stack's servers in threads of this process")
    parser.add_argument("--warm", type=int, default=200, help="tasks run first (stack start, cold environments)")
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
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        total = 0
        for value in lambdarun.map(tiny, (i for i in range(args.tasks)), chunksize=args.chunksize,
                                   session=session):
            total += value
        wall = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        assert total == args.tasks * (args.tasks + 1) // 2, total
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(json.dumps({
            "tasks": args.tasks,
            "chunksize": args.chunksize,
            "out_of_process": not args.in_process,
            "seconds": round(wall, 3),
            "tasks_per_s": round(args.tasks / wall, 1),
            "ms_per_task": round(1000 * wall / args.tasks, 4),
            "caller_cpu_ms_per_task": round(1000 * cpu / args.tasks, 4),
            "caller_peak_rss_mib": round(vm_hwm_mib(), 1),
            "first_call_s": round(first_call, 3),
            "pid": os.getpid(),
        }))
    finally:
        session.close()


if __name__ == "__main__":
    main()
