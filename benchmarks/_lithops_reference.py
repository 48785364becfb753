"""Drive Lithops' localhost backend (``lithops`` 3.8) for ``test_lithops.py``, in a child
process of its own (Lithops starts its own worker processes and keeps module-level state).

    python benchmarks/_lithops_reference.py --version {1|2} --tasks N --calls K

Lithops picks the localhost handler from ``localhost.version`` in its config (1:
``LocalhostHandlerV1``, 2 or unset: ``LocalhostHandlerV2``; ``lithops/executors.py``). The
storage backend is ``localhost`` too (files under Lithops' temp folder). Runs, in one
``FunctionExecutor``: one warm-up call, ``map(tiny, range(-N, 0))`` (``tiny`` = ``abs``) with ``get_result``, then K
single calls (``call_async`` + ``get_result``) one after the other. Prints one JSON line:
``{"map_s": ..., "call_s": [...], "calls_lost": n, "calls_not_attempted": m, "first_call_s": ..., ...}``.

Every wait has a deadline of its own (``within``): a single call not answered within
``--call-timeout`` is counted in ``calls_lost`` and the remaining calls in
``calls_not_attempted`` (the v2 handler sometimes never starts a job queued right after the
previous one finished: seen here with two calls' jobs queued, nothing running and every thread
waiting, so nothing more would run in that executor), with every
thread's stack on stderr; a warm-up past ``--first-call-timeout`` or a map past ``--map-timeout`` fails
the run (exit 3). The process
ends with ``os._exit``: a given-up wait is still blocked inside Lithops.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def tiny(x: int) -> int:
    """The tiny task (Lithops refuses a builtin such as ``abs`` itself: it inspects the callable)."""
    return abs(x)


def within(seconds: float, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread; ``(True, value)``, or ``(False, None)`` if it has not
    returned within ``seconds`` (the thread is left behind: the process ends with ``os._exit``).
    ``FunctionExecutor.get_result(timeout=...)`` is not enough: when the v2 handler loses a job
    (below), Lithops' own wait blocks past its timeout (seen here for over 10 minutes)."""
    box: list = []
    errors: list = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if errors:
        raise errors[0]
    return (True, box[0]) if box else (False, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=int, choices=(1, 2), required=True)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--call-timeout", type=float, default=60.0,
                        help="seconds a single call may take before it is counted as lost")
    parser.add_argument("--first-call-timeout", type=float, default=120.0,
                        help="seconds the warm-up call (runtime set-up included) may take before the run fails")
    parser.add_argument("--map-timeout", type=float, default=600.0,
                        help="seconds the map may take before the run fails")
    args = parser.parse_args()
    t0 = time.perf_counter()
    import lithops

    config = {"lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
              # the runtime: this interpreter (its default, "python" on PATH, may lack lithops)
              "localhost": {"version": args.version, "runtime": sys.executable}}
    executor = lithops.FunctionExecutor(config=config)
    handler = type(executor.compute_handler).__name__  # LocalhostHandlerV1 / LocalhostHandlerV2
    done, value = within(args.first_call_timeout, lambda: executor.get_result(fs=executor.call_async(tiny, -1)))
    if not done:
        faulthandler.dump_traceback(all_threads=True)
        print(f"lithops v{args.version}: the warm-up call had no answer within {args.first_call_timeout} s",
              file=sys.stderr, flush=True)
        os._exit(3)
    assert value == 1, value
    first_call_s = time.perf_counter() - t0
    start = time.perf_counter()
    done, results = within(args.map_timeout,
                           lambda: executor.get_result(fs=executor.map(tiny, range(-args.tasks, 0))))
    if not done:
        faulthandler.dump_traceback(all_threads=True)
        print(f"lithops v{args.version}: the map of {args.tasks} tasks did not finish within {args.map_timeout} s",
              file=sys.stderr, flush=True)
        os._exit(3)
    map_s = time.perf_counter() - start
    assert list(results) == list(range(args.tasks, 0, -1)), results[:5]
    calls = []
    lost = 0
    for i in range(args.calls):
        start = time.perf_counter()
        done, value = within(args.call_timeout,
                             lambda i=i: executor.get_result(fs=executor.call_async(tiny, -i - 1)))
        if not done:
            # the v2 handler's consumers are gone (see the module doc): every later call would
            # wait the same way, so the rest are not attempted, and counted apart
            lost += 1
            faulthandler.dump_traceback(all_threads=True)
            break
        calls.append(time.perf_counter() - start)
        assert value == i + 1, value
    if not lost:
        within(args.call_timeout, executor.clean)
    print(json.dumps({
        "version": args.version, "handler": handler, "calls_lost": lost, "call_timeout_s": args.call_timeout,
        "calls_not_attempted": args.calls - len(calls) - lost, "map_s": map_s, "tasks": args.tasks,
        "call_s": calls, "first_call_s": first_call_s, "lithops": lithops.__version__,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }), flush=True)
    os._exit(0)  # a lost call's thread is still blocked in Lithops: do not wait for it


if __name__ == "__main__":
    sys.exit(main())
