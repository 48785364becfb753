"""The first call of a fresh process, per backend (issue 20): what a script pays once before
its first result on the embedded local target.

Each sample is a new Python process with a fresh state folder, running::

    t0 = time.perf_counter(); import lambdarun; lambdarun.run(f, -1, backend=B)

so it includes importing lambdarun, starting the embedded stack (local Lambda service, moto;
for ``temporal`` also the Temporal dev server), creating the function, its cold start, and the
call. Backends are interleaved sample by sample. The covalent backend's first call is measured
in ``test_covalent.py`` beside the original executor's; the references of ``temporal``
(``temporalio.contrib.aws.lambda_worker``: a worker, not a caller) and ``durable`` (AWS's SDK
runs inside a function that must already exist) have no equivalent first call to compare.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SNIPPET = """
import json, time
t0 = time.perf_counter()
import lambdarun
f = {function}
assert lambdarun.run(f, -1, backend={backend!r}) == 1
print(json.dumps({{"first_call_s": time.perf_counter() - t0}}), flush=True)
"""
#: what each backend runs (durable: a handler(event, context))
FUNCTIONS = {"temporal": "abs", "durable": "lambda event, context: abs(event)"}


@pytest.mark.timeout(1800)
def test_first_call_of_a_process(benchmark: Any, headline: Any, record_rss: None, full_bench: bool,
                                 tmp_path: Path) -> None:
    rounds = 5 if full_bench else 1
    samples: dict[str, list[dict]] = {b: [] for b in FUNCTIONS}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMBDARUN_", "TEMPORAL_"))}

    def one_round() -> None:
        for backend, function in FUNCTIONS.items():
            state = tmp_path / f"{backend}-{len(samples[backend])}"
            env = {**base_env, "LAMBDARUN_TARGET": "local", "LAMBDARUN_LOCAL__STATE_DIR": str(state),
                   "LAMBDARUN_PROGRESS": "false"}
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", SNIPPET.format(function=function, backend=backend)],
                                 env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - start
            if out.returncode != 0:
                raise AssertionError(f"{backend} first call failed ({out.returncode}):\n{out.stderr[-4000:]}")
            line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
            samples[backend].append({**json.loads(line), "process_s": wall})

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    first = True
    for backend, runs in samples.items():
        values = [r["first_call_s"] for r in runs]
        row = dict(
            scenario=f"{backend}: first call of a fresh process (import, stack start, create, cold start, call)",
            value=statistics.median(values), unit="s",
            note=(f"{rounds} fresh processes, interleaved with the other backends: {[round(v, 2) for v in values]} s "
                  f"to the result; whole process incl. interpreter start and shutdown "
                  f"{[round(r['process_s'], 2) for r in runs]} s"
                  + ("; includes starting the Temporal dev server" if backend == "temporal" else "")),
        )
        if first:
            headline.set(row.pop("scenario"), row.pop("value"), row.pop("unit"), **row)
            first = False
        else:
            headline.also(row.pop("scenario"), row.pop("value"), row.pop("unit"), **row)
