"""How many invocations one lambdarun caller keeps in flight, and per second, against a
Lambda-like endpoint that takes a fixed time per invocation (issue 20).

The endpoint is :class:`lambdarun.testing.LatencyLambda` in its own process: it answers each
``Invoke`` after ``duration`` seconds (1 s in full mode) with at most ``concurrency`` in
flight, refusing more with Lambda's 429; it runs no code. Its answers to the covalent backend
are signed outcomes made with the session's key (``benchmarks/_latency_responder.py``:
verifies the call envelope, binds the outcome to its task id and attempt, packs one
pre-encoded value), so the caller does all its real work: encode and sign each call,
SigV4-sign and send the Invoke, verify and decode the outcome, release the claim.

**The ceiling.** With ``concurrency`` C and ``duration`` D no caller gets more than C / D
invocations per second (Little's law: at most C in flight, each at least D): 1,000/s at
AWS's default account limit of 1,000 and 1 s tasks, reached only in the seconds where all
C slots are busy; a finite run also has a ramp (the first answers come after D) and a
drain. So each row reports the whole run's rate, the *sustained* rate (the median of the
full seconds between the first and the last answer second) and that ceiling; and the
caller's own capacity is measured against an endpoint whose limit is raised to 2,000 (AWS
raises account concurrency on request), where the endpoint's ceiling is 2,000/s and what
is left is the caller.

* ``test_covalent_map_against_latency_endpoint``: ``lambdarun.map`` with ``backend="covalent"``
  and ``max_workers`` = the endpoint's concurrency (what the target allows on AWS), tasks
  batched as the map batches them by default (``[covalent] chunksize``): tasks/s and
  invocations/s.
* ``test_covalent_map_one_task_per_invocation``: the same with ``chunksize=1`` (one invocation
  per task, as a caller of slow tasks runs it): the issue's target, >= 1,000 invocations/s
  sustained with >= 900 in flight, at concurrency 1,000 and with the limit raised to 2,000.
* ``test_invoker_async_against_latency_endpoint``: lambdarun's own invoker (the aws
  target's, :mod:`lambdarun.lambda_http` on :mod:`lambdarun.http_loop`) with no backend:
  ``invoke_async`` keeps the endpoint's concurrency in flight from its one event-loop
  thread, each answer's callback sending the next: the floor under the covalent map; at
  both limits, with the issue's target too (one caller's invocations, no per-task work).
* ``test_invoker_threads_against_latency_endpoint``: the same invoker's blocking ``invoke``
  from a thread pool of the endpoint's size (what a caller with its own threads pays), at
  limit 1,000.
* ``test_boto3_threads_against_latency_endpoint``: the floor under boto3, plain ``boto3``
  ``invoke`` calls from a thread pool of the same size with a connection pool as large (no
  lambdarun): where the caller stops when lambdarun adds nothing.

Rerun after a change to the caller (smoke: tiny sizes, 50 ms tasks)::

    python benchmarks/report.py --only latency_endpoint
    python -m pytest benchmarks/test_latency_endpoint.py --full-bench --benchmark-enable -s
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.plugins import make_plugin_manager
from lambdarun.session import Session
from lambdarun.testing.latency import LatencyLambda

HERE = Path(__file__).resolve().parent
FUNCTION = "lambdarun-latency-bench"
CONCURRENCY = 1000  # AWS's default account concurrency
RAISED = 2000  # a raised account limit: the endpoint's ceiling above the caller's
RATE_TARGET = 1000  # invocations/s
IN_FLIGHT_TARGET = 900
PROBE = b'{"lambdarun_covalent_versions": 1}'  # answered without signing anything


@pytest.fixture(scope="module")
def duration(full_bench: bool) -> float:
    return 1.0 if full_bench else 0.05


@pytest.fixture(scope="module")
def key() -> str:
    return secrets.token_urlsafe(48)


class Bench:
    """One endpoint (its own process) and a covalent session pointed at it."""

    def __init__(self, endpoint: LatencyLambda, session: Session, concurrency: int) -> None:
        self.endpoint, self.session, self.concurrency = endpoint, session, concurrency


@contextlib.contextmanager
def _bench(concurrency: int, duration: float, key: str, scratch: Path) -> Iterator[Bench]:
    env = {
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "LAMBDARUN_BENCH_SIGNING_KEY": key,
    }
    with LatencyLambda(duration=duration, concurrency=concurrency, function_name=FUNCTION,
                       responder="_latency_responder:respond", env=env) as endpoint:
        creds = endpoint.boto3_credentials()
        credentials_file = scratch / "credentials"
        credentials_file.write_text(
            f"[default]\naws_access_key_id = {creds['aws_access_key_id']}\n"
            f"aws_secret_access_key = {creds['aws_secret_access_key']}\n")
        credentials_file.chmod(0o600)
        overrides = {
            "target": "aws",
            "region": "us-east-1",
            "aws": {"endpoint_url": endpoint.url, "credentials_file": str(credentials_file)},
            "signing_key": key,
            "storage_url": (scratch / "storage").as_uri(),
            "progress": False,
            "log_level": "WARNING",
            "covalent": {"function_name": FUNCTION, "max_workers": concurrency},
        }
        pm = make_plugin_manager([lambdarun_covalent.plugin], load_entrypoints=False, environ={})
        with Session(pm, overrides=overrides, environ={}, cwd=scratch) as session:
            assert lambdarun.run(abs, -1, backend="covalent", session=session) == 1  # probe, function, clients
            yield Bench(endpoint, session, concurrency)


@pytest.fixture(scope="module")
def default_limit(duration: float, key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    with _bench(CONCURRENCY, duration, key, tmp_path_factory.mktemp("latency-1000")) as bench:
        yield bench


@pytest.fixture(scope="module")
def raised_limit(duration: float, key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    with _bench(RAISED, duration, key, tmp_path_factory.mktemp("latency-2000")) as bench:
        yield bench


@pytest.fixture(params=["limit-1000", "limit-2000"])
def bench(request: pytest.FixtureRequest) -> Bench:
    return request.getfixturevalue("default_limit" if request.param == "limit-1000" else "raised_limit")


def _measure(endpoint: LatencyLambda, work) -> dict[str, Any]:
    endpoint.reset()
    load_before = os.getloadavg()
    cpu0, t0 = time.process_time(), time.perf_counter()
    work()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats = endpoint.stats()
    return {"wall_s": wall, "caller_cpu_s": cpu, "stats": stats,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def sustained(per_second: list[int]) -> float:
    """The median of the full seconds: without the first answer second (the ramp: answers
    start one duration after the first invoke) and the last (the drain, a partial second)."""
    answered = list(per_second)
    while answered and answered[0] == 0:
        answered.pop(0)
    full = answered[1:-1]
    return float(statistics.median(full)) if full else float(max(answered or [0]))


def _record(headline: Any, label: str, bench: Bench, tasks: int, duration: float, m: dict[str, Any], note: str,
            *, target: bool) -> None:
    stats = m["stats"]
    rate = stats["invocations"] / m["wall_s"]
    per_second = stats["per_second"]
    ceiling = bench.concurrency / duration
    steady = sustained(per_second)
    where = f"{tasks:,} x {duration:g} s tasks, concurrency {bench.concurrency:,}"
    headline.set(
        f"{label}: sustained invocations/s against the latency endpoint ({where})",
        steady, "invocations/s", target=RATE_TARGET if target else None, target_op=">=",
        note=(f"{note} The median full second; the endpoint's ceiling here is {ceiling:,.0f}/s "
              f"(concurrency / duration). Whole run: {rate:,.0f} invocations/s ({tasks / m['wall_s']:,.0f} tasks/s) "
              f"in {m['wall_s']:.1f} s. Endpoint: {stats['invocations']:,} answered, {stats['throttled']} "
              f"throttled, peak {stats['max_in_flight']} in flight, {stats['connections']:,} TCP connections "
              f"opened (peak {stats['max_connections']} open); answers per second {per_second}; caller CPU "
              f"{1000 * m['caller_cpu_s'] / tasks:.2f} ms per task, endpoint CPU {stats['cpu_s']:.1f} s in "
              f"{m['wall_s']:.1f} s; load {m['load_before']} -> {m['load_after']}."),
        endpoint_stats=stats, caller_cpu_s=round(m["caller_cpu_s"], 3), wall_s=round(m["wall_s"], 3),
        load_before=m["load_before"], load_after=m["load_after"], ceiling=ceiling,
    )
    headline.also(f"{label}: sustained share of the endpoint's ceiling ({where})",
                  round(100 * steady / ceiling, 1), "%")
    headline.also(f"{label}: whole-run invocations/s, ramp and drain included ({where})", rate, "invocations/s")
    headline.also(f"{label}: whole-run tasks/s ({where})", tasks / m["wall_s"], "tasks/s")
    headline.also(f"{label}: peak invocations in flight ({where})", float(stats["max_in_flight"]), "in flight",
                  target=IN_FLIGHT_TARGET if target else None, target_op=">=")
    headline.also(f"{label}: caller CPU per task ({where})", 1000 * m["caller_cpu_s"] / tasks, "ms")


def _map(bench: Bench, tasks: int, **options: Any) -> Any:
    out: dict[str, Any] = {}

    def work() -> None:
        out["results"] = list(lambdarun.map(abs, [-1] * tasks, backend="covalent", session=bench.session, **options))

    m = _measure(bench.endpoint, work)
    assert out["results"] == [1] * tasks
    assert m["stats"]["function_errors"] == 0 and m["stats"]["refused"] == 0
    return m


@pytest.mark.timeout(1800)
def test_covalent_map_against_latency_endpoint(benchmark: Any, headline: Any, record_rss: None, default_limit: Bench,
                                               bench_size: Any, duration: float) -> None:
    tasks = bench_size(10_000, 40)
    m = benchmark.pedantic(lambda: _map(default_limit, tasks), rounds=1, iterations=1)
    _record(headline, "covalent map, batched (default chunksize)", default_limit, tasks, duration, m,
            "lambdarun.map(abs, ..., backend='covalent') with max_workers = the endpoint's concurrency and the "
            "map's own batching (several tasks per invocation when many are queued: invocations < tasks), target "
            "'aws' pointed at the endpoint; every outcome signed and verified; claims released in a local folder "
            "(storage_url file://), where on AWS they are S3 requests.", target=False)


@pytest.mark.timeout(1800)
def test_covalent_map_one_task_per_invocation(benchmark: Any, headline: Any, record_rss: None, bench: Bench,
                                              bench_size: Any, duration: float) -> None:
    tasks = bench_size(10 * bench.concurrency, 40)
    m = benchmark.pedantic(lambda: _map(bench, tasks, chunksize=1), rounds=1, iterations=1)
    assert m["stats"]["invocations"] == tasks
    _record(headline, "covalent map, one task per invocation", bench, tasks, duration, m,
            "lambdarun.map(abs, ..., backend='covalent', chunksize=1): one invocation per task, max_workers = the "
            "endpoint's concurrency; every call encoded and signed, every outcome verified and decoded, every "
            "claim released (local folder).", target=True)


@pytest.mark.timeout(1800)
def test_invoker_async_against_latency_endpoint(benchmark: Any, headline: Any, record_rss: None, bench: Bench,
                                                bench_size: Any, duration: float) -> None:
    import threading

    tasks = bench_size(10 * bench.concurrency, 40)
    invoker = bench.session.invoker

    def work() -> None:
        lock, finished = threading.Lock(), threading.Event()
        state = {"left": tasks, "done": 0, "bad": 0}

        def send() -> None:
            with lock:
                if state["left"] == 0:
                    return
                state["left"] -= 1
            invoker.invoke_async(FUNCTION, PROBE).future.add_done_callback(answered)

        def answered(future: concurrent.futures.Future) -> None:
            ok = future.exception() is None and future.result().status_code == 200
            with lock:
                state["done"] += 1
                state["bad"] += not ok
                if state["done"] == tasks:
                    finished.set()
            send()

        for _ in range(bench.concurrency):
            send()
        assert finished.wait(600)
        assert state["bad"] == 0

    m = benchmark.pedantic(lambda: _measure(bench.endpoint, work), rounds=1, iterations=1)
    _record(headline, "lambdarun invoker, invoke_async (no backend)", bench, tasks, duration, m,
            f"session.invoker.invoke_async (lambdarun.lambda_http: botocore's SigV4 signer; lambdarun.http_loop: "
            f"h11 on one asyncio loop thread, keep-alive connections) keeping {bench.concurrency} in flight, each "
            "answer's callback sending the next: the floor under the covalent map, beside plain boto3's.",
            target=True)


@pytest.mark.timeout(1800)
def test_invoker_threads_against_latency_endpoint(benchmark: Any, headline: Any, record_rss: None,
                                                  default_limit: Bench, bench_size: Any, duration: float) -> None:
    bench = default_limit  # 2,000 threads only measure the GIL queue (and raise the load for the rows after)
    tasks = bench_size(10 * bench.concurrency, 40)
    invoker = bench.session.invoker  # the aws target's invoker (lambdarun.lambda_http), as the covalent map uses it

    def one(_: int) -> int:
        return invoker.invoke(FUNCTION, PROBE).status_code

    def work() -> None:
        with concurrent.futures.ThreadPoolExecutor(bench.concurrency) as pool:
            assert set(pool.map(one, range(tasks))) == {200}

    m = benchmark.pedantic(lambda: _measure(bench.endpoint, work), rounds=1, iterations=1)
    _record(headline, "lambdarun invoker, invoke from threads (no backend)", bench, tasks, duration, m,
            f"session.invoker.invoke from a {bench.concurrency}-thread pool: each thread waits for its answer from "
            "the invoker's event-loop thread (what a caller that brings its own threads pays).", target=False)


@pytest.mark.timeout(1800)
def test_boto3_threads_against_latency_endpoint(benchmark: Any, headline: Any, record_rss: None, default_limit: Bench,
                                                bench_size: Any, duration: float) -> None:
    import boto3
    from botocore.config import Config

    bench = default_limit
    tasks = bench_size(10_000, 40)
    client = boto3.client(
        "lambda", endpoint_url=bench.endpoint.url, region_name="us-east-1", **bench.endpoint.boto3_credentials(),
        config=Config(max_pool_connections=bench.concurrency, retries={"mode": "standard", "max_attempts": 10},
                      read_timeout=120),
    )

    def one(_: int) -> int:
        response = client.invoke(FunctionName=FUNCTION, Payload=PROBE)
        response["Payload"].read()
        return response["StatusCode"]

    def work() -> None:
        with concurrent.futures.ThreadPoolExecutor(bench.concurrency) as pool:
            assert set(pool.map(one, range(tasks))) == {200}

    m = benchmark.pedantic(lambda: _measure(bench.endpoint, work), rounds=1, iterations=1)
    client.close()
    _record(headline, "plain boto3 (no lambdarun)", bench, tasks, duration, m,
            f"boto3 lambda client (max_pool_connections={bench.concurrency}) shared by a {bench.concurrency}-thread "
            "pool; the floor under any boto3-based caller in one process.", target=False)
