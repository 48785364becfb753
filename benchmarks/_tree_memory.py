"""Sample the memory of a process tree from outside it (its own process: no GIL shared with
what is measured).

    python benchmarks/_tree_memory.py PID [INTERVAL]

Every INTERVAL seconds (default 0.1) it sums the PSS (proportional set size: each shared page
counted once over all processes, split among those sharing it) of PID and all its
descendants, via psutil (``/proc/PID/smaps_rollup``). When its stdin closes it prints one JSON
line: ``{"peak_mib": ..., "peak_processes": ..., "samples": ...}``. Used by the
``record_rss`` fixture and ``tree_memory()`` in ``conftest.py``: one definition of memory for
lambdarun and the references (the caller, the local stack, every Lambda environment, a
reference's own child process: whatever runs under the benchmark's process).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import psutil


def tree_pss(root: psutil.Process) -> tuple[int, int]:
    total = count = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for proc in procs:
        if proc.pid == os.getpid():
            continue  # the sampler itself is a child of the measured process
        try:
            total += proc.memory_full_info().pss
            count += 1
        except psutil.Error:  # exited meanwhile, or not ours to read
            continue
    return total, count


def main() -> int:
    root = psutil.Process(int(sys.argv[1]))
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    peak = peak_count = samples = 0
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        total, count = tree_pss(root)
        samples += 1
        if total > peak:
            peak, peak_count = total, count
        if done.wait(interval):
            total, count = tree_pss(root)  # one last sample at the end
            if total > peak:
                peak, peak_count = total, count
            break
    print(json.dumps({"peak_mib": round(peak / 2**20, 1), "peak_processes": peak_count, "samples": samples + 1}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
