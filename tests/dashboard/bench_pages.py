"""How fast the dashboard's pages render with a lot of history (a measurement, not a test).

    python tests/dashboard/bench_pages.py

Fills a journal with 20 maps of 1,000 tasks and the embedded local service with 3,000
invocation records, then times GETs of the runs, run, invocations and functions pages.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import urllib.request
from typing import Any

import lambdarun.dashboard.plugin
from lambdarun.dashboard import journal
from lambdarun.dashboard import DashboardServer, serve
from lambdarun.futures import LambdaFuture
from lambdarun.local.testing import create_function
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session


def identity(x: Any) -> Any:
    return x


def fill_journal(session: Session, batches: int = 20, tasks: int = 1000) -> str:
    batch_id = ""
    for _ in range(batches):
        futures = [LambdaFuture(f"t{i}") for i in range(tasks)]
        batch_id = journal.record_batch(session, "covalent", identity, futures) or ""
        for i, future in enumerate(futures):
            if i % 50 == 0:
                future.finish(exception=ValueError("x"), remote_traceback="Traceback ...\n" * 20, stdout="out\n" * 50)
            else:
                future.finish(i, stdout="out\n" * 10)
    journal.flush()
    return batch_id


def timed(server: DashboardServer, path: str, rounds: int = 10) -> str:
    times, size = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        with urllib.request.urlopen(server.url + path) as response:
            size = len(response.read())
        times.append(time.perf_counter() - start)
    return f"{path[:48]:48s} median {statistics.median(times) * 1000:.1f} ms, {size // 1024} KiB"


def main() -> None:
    extra = [] if "lambdarun.dashboard.plugin" in DEFAULT_PLUGINS else [lambdarun.dashboard.plugin]
    pm = make_plugin_manager(extra, load_entrypoints=False, environ={})
    state = tempfile.mkdtemp(prefix="lambdarun-bench-pages-")
    session = Session(pm, overrides={"target": "local", "local": {"state_dir": state}, "progress": False}, environ={})
    try:
        batch_id = fill_journal(session)
        lam = session.target.client("lambda")
        create_function(lam, "bench-pages", "def handler(event, context):\n    return event\n")
        start = time.perf_counter()
        for i in range(3000):
            lam.invoke(FunctionName="bench-pages", Payload=b'{"i": %d}' % i)
        print(f"3,000 invocations in {time.perf_counter() - start:.1f} s")
        server = serve(session)
        try:
            for path in (
                "runs/", f"runs/{batch_id}", f"runs/{batch_id}?_fragment=live", f"runs/{batch_id}?status=failed",
                "invocations/", "invocations/?function=bench-pages&status=succeeded",
                "invocations/?_fragment=live", "functions/",
            ):
                print(timed(server, path))
        finally:
            server.stop()
    finally:
        session.close()


if __name__ == "__main__":
    main()
