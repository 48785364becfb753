"""Drive Lithops' localhost backend (``lithops`` 3.8) for ``test_lithops.py``, in a child
process of its own (Lithops starts its own worker processes and keeps module-level state).

    python benchmarks/_lithops_reference.py --version {1|2} --tasks N --calls K

Lithops picks the localhost handler from ``localhost.version`` in its config (1:
``LocalhostHandlerV1``, 2 or unset: ``LocalhostHandlerV2``; ``lithops/executors.py``). The
storage backend is ``localhost`` too (files under Lithops' temp folder). Runs, in one
``FunctionExecutor``: one warm-up call, ``map(tiny, range(-N, 0))`` (``tiny`` = ``abs``) with ``get_result``, then K
single calls (``call_async`` + ``get_result``) one after the other. Prints one JSON line:
``{"map_s": ..., "call_s": [...], "calls_lost": n, "first_call_s": ..., "peak_rss_mib": ...}``
(a single call not answered within ``--call-timeout`` is counted in ``calls_lost``, not waited
for: under heavy load the v2 handler once never started a call's job here).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def tiny(x: int) -> int:
    """The tiny task (Lithops refuses a builtin such as ``abs`` itself: it inspects the callable)."""
    return abs(x)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=int, choices=(1, 2), required=True)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--call-timeout", type=float, default=120.0,
                        help="seconds a single call may take before it is counted as lost")
    args = parser.parse_args()
    t0 = time.perf_counter()
    import lithops

    config = {"lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
              # the runtime: this interpreter (its default, "python" on PATH, may lack lithops)
              "localhost": {"version": args.version, "runtime": sys.executable}}
    executor = lithops.FunctionExecutor(config=config)
    handler = type(executor.compute_handler).__name__  # LocalhostHandlerV1 / LocalhostHandlerV2
    first = executor.call_async(tiny, -1)
    assert executor.get_result(fs=first) == 1
    first_call_s = time.perf_counter() - t0
    start = time.perf_counter()
    futures = executor.map(tiny, range(-args.tasks, 0))
    results = executor.get_result(fs=futures)
    map_s = time.perf_counter() - start
    assert list(results) == list(range(args.tasks, 0, -1)), results[:5]
    calls = []
    lost = 0
    for i in range(args.calls):
        start = time.perf_counter()
        future = executor.call_async(tiny, -i - 1)
        try:
            # a job the v2 handler never started (seen under heavy load) must not hang the run
            value = executor.get_result(fs=future, timeout=args.call_timeout)
        except Exception:  # noqa: BLE001 - lithops raises its own timeout types
            lost += 1
            continue
        calls.append(time.perf_counter() - start)
        assert value == i + 1, value
    executor.clean()
    print(json.dumps({
        "version": args.version, "handler": handler, "calls_lost": lost, "call_timeout_s": args.call_timeout, "map_s": map_s, "tasks": args.tasks, "call_s": calls,
        "first_call_s": first_call_s, "lithops": lithops.__version__,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
