"""At most one run per task when several tasks share one invocation (a batch, issue 20) and
the connection carrying it is cut mid-batch: the caller re-delivers the same batch, and
every task's own claim keeps it to one run (the ones already done hand back their first
outcome, the rest run once, wherever they are claimed first)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def record_and_sleep(args):
    folder, x, seconds = args
    Path(folder, f"{x}-{os.getpid()}-{os.urandom(4).hex()}").write_text("ran")
    time.sleep(seconds)
    return x * 10


def test_a_connection_dropped_mid_batch_runs_each_task_once(proxied, names, invocation_log, tmp_path):
    session, proxy = proxied
    since = invocation_log.mark(names.FUNCTION)
    proxy.drop_next(after=1.0)  # the batch needs ~3.2 s: cut after about two of its tasks ran
    items = [(str(tmp_path), x, 0.4) for x in range(8)]
    futures = list(session.backend("covalent").map(record_and_sleep, items, chunksize=8, max_workers=1))
    assert [f.result(timeout=120) for f in futures] == [x * 10 for x in range(8)]
    assert sum(f.info["task"].attempt.batched for f in futures) >= 6  # they did share invocations
    assert all(f.info["task"].attempt.number == 1 for f in futures)  # re-delivered, not retried
    assert proxy.drops == 1  # the fault did happen: the first answer was lost
    records = invocation_log.settled(names.FUNCTION, since)  # every delivery of the batch ended
    assert len(records) >= 2 and {r["status"] for r in records} == {"succeeded"}
    ran = sorted(int(p.name.split("-")[0]) for p in tmp_path.iterdir())
    assert ran == list(range(8))  # each task ran exactly once
