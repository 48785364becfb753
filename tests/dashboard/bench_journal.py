"""What the run journal costs a ``map`` of 1000 tiny tasks (a measurement, not a test).

    python tests/dashboard/bench_journal.py [--tasks 1000] [--rounds 5]

1. in the caller: ``record_batch`` plus the done-callbacks, on futures finished in this
   thread (no Lambda), against the same futures without the journal;
2. end to end: ``map`` of ``tasks`` tiny calls through the covalent backend on the embedded
   local target, journal off and on, rounds interleaved; medians per task.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import cloudpickle

from lambdarun.dashboard import journal
from lambdarun.futures import LambdaFuture

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def tiny(x: int) -> int:
    return x + 1


def caller_cost(tasks: int, rounds: int, state: Path) -> None:
    settings = types.SimpleNamespace(
        target="local",
        sections={"dashboard": types.SimpleNamespace(journal="auto", journal_path=str(state / "micro.db"), journal_keep=500)},
    )
    session = types.SimpleNamespace(settings=settings, target=types.SimpleNamespace(state_dir=lambda: state))
    off, on = [], []
    for _ in range(rounds):
        futures = [LambdaFuture(f"t{i}") for i in range(tasks)]
        t0 = time.perf_counter()
        for i, f in enumerate(futures):
            f.finish(i, stdout="hello\n")
        off.append(time.perf_counter() - t0)
        futures = [LambdaFuture(f"t{i}") for i in range(tasks)]
        t0 = time.perf_counter()
        journal.record_batch(session, "bench", tiny, futures)
        for i, f in enumerate(futures):
            f.finish(i, stdout="hello\n")
        on.append(time.perf_counter() - t0)
        journal.flush()
    writer = journal.writer_for(Path(settings.sections["dashboard"].journal_path))
    extra = (statistics.median(on) - statistics.median(off)) / tasks * 1e6
    print(f"caller thread, {tasks} futures: without journal {statistics.median(off) * 1e3:.2f} ms, "
          f"with {statistics.median(on) * 1e3:.2f} ms -> +{extra:.1f} us per task")
    print(f"writer thread: {writer.seconds_writing / writer.rows_written * 1e6:.1f} us per row "
          f"({writer.rows_written} rows, {writer.seconds_writing * 1e3:.1f} ms, off the caller's thread)")


def end_to_end(tasks: int, rounds: int, state: Path) -> None:
    import lambdarun_covalent.plugin

    from lambdarun.plugins import make_plugin_manager
    from lambdarun.session import Session

    pm = make_plugin_manager([lambdarun_covalent.plugin], load_entrypoints=False, environ={})
    base = {"target": "local", "progress": False, "local": {"state_dir": str(state / "local")},
            "covalent": {"function_name": "lambdarun-journal-bench"}}
    session = Session(pm, overrides=base, environ={})
    backend = session.backend("covalent")
    list(f.result() for f in backend.map(tiny, range(50)))  # warm up environments
    timings: dict[str, list[float]] = {"off": [], "on": []}
    jsettings = types.SimpleNamespace(
        target="local",
        sections={"dashboard": types.SimpleNamespace(journal="on", journal_path=str(state / "e2e.db"), journal_keep=500)},
    )
    jsession = types.SimpleNamespace(settings=jsettings, target=session.target)
    for _ in range(rounds):
        for mode in ("off", "on"):
            t0 = time.perf_counter()
            futures = list(backend.map(tiny, range(tasks)))
            if mode == "on":
                journal.record_batch(jsession, "covalent", tiny, futures)
            for f in futures:
                f.result()
            timings[mode].append(time.perf_counter() - t0)
        journal.flush()
    off, on = statistics.median(timings["off"]), statistics.median(timings["on"])
    print(f"map of {tasks} tiny tasks, local target, medians of {rounds}: journal off {off:.3f} s "
          f"({off / tasks * 1e3:.2f} ms/task), on {on:.3f} s ({on / tasks * 1e3:.2f} ms/task): "
          f"{(on - off) / tasks * 1e6:+.0f} us per task ({(on / off - 1) * 100:+.1f} %)")
    print(f"  all rounds: off {[round(t, 3) for t in timings['off']]}, on {[round(t, 3) for t in timings['on']]}")
    session.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        caller_cost(args.tasks, args.rounds, Path(tmp))
        end_to_end(args.tasks, args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
