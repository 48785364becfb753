"""How many invocations one lambdarun caller keeps in flight, and per second, against a
Lambda-like endpoint that takes a fixed time per invocation (issue 20).

The endpoint is :class:`lambdarun.testing.LatencyLambda` in its own process: it answers each
``Invoke`` after ``duration`` seconds (1 s in full mode) with at most ``concurrency`` (1,000,
AWS's default account limit) in flight, refusing more with Lambda's 429; it runs no code.
Its answers to the covalent backend are signed outcomes made with the session's key
(``benchmarks/_latency_responder.py``: verifies the call envelope, binds the outcome to its
task id and attempt, packs one pre-encoded value), so the caller does all its real work:
encode and sign each call, SigV4-sign and send the Invoke, verify and decode the outcome,
release the claim.

* ``test_covalent_map_against_latency_endpoint``: ``lambdarun.map`` of N calls with
  ``backend="covalent"`` and ``max_workers`` = the endpoint's concurrency (what the target
  would allow on AWS): invocations/s over the whole map and the endpoint's peak in flight.
  Targets: >= 1,000 invocations/s with >= 900 in flight.
* ``test_invoker_threads_against_latency_endpoint``: lambdarun's own invoker (the aws
  target's, :mod:`lambdarun.lambda_http`) from a thread pool of the same size: the floor under
  the covalent map.
* ``test_boto3_threads_against_latency_endpoint``: the floor under boto3, the same number of
  plain ``boto3`` ``invoke`` calls from a thread pool of the same size with a connection
  pool as large (no lambdarun): where the caller stops when lambdarun adds nothing.

Rerun after a change to the caller (smoke: tiny sizes, 50 ms tasks)::

    python benchmarks/report.py --only latency_endpoint
    python -m pytest benchmarks/test_latency_endpoint.py --full-bench --benchmark-enable -s
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
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
CONCURRENCY = 1000
RATE_TARGET = 1000  # invocations/s
IN_FLIGHT_TARGET = 900


@pytest.fixture(scope="module")
def duration(full_bench: bool) -> float:
    return 1.0 if full_bench else 0.05


@pytest.fixture(scope="module")
def key() -> str:
    return secrets.token_urlsafe(48)


@pytest.fixture(scope="module")
def endpoint(duration: float, key: str) -> Iterator[LatencyLambda]:
    env = {
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "LAMBDARUN_BENCH_SIGNING_KEY": key,
    }
    with LatencyLambda(duration=duration, concurrency=CONCURRENCY, function_name=FUNCTION,
                       responder="_latency_responder:respond", env=env) as ep:
        yield ep


@pytest.fixture(scope="module")
def session(endpoint: LatencyLambda, key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    scratch = tmp_path_factory.mktemp("latency-caller")
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
        "covalent": {"function_name": FUNCTION, "max_workers": CONCURRENCY},
    }
    pm = make_plugin_manager([lambdarun_covalent.plugin], load_entrypoints=False, environ={})
    with Session(pm, overrides=overrides, environ={}, cwd=scratch) as s:
        assert lambdarun.run(abs, -1, backend="covalent", session=s) == 1  # probe, function, clients
        yield s


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


def _record(headline: Any, label: str, tasks: int, duration: float, m: dict[str, Any], note: str) -> None:
    stats = m["stats"]
    rate = stats["invocations"] / m["wall_s"]
    per_second = stats["per_second"]
    steady = max(per_second[1:-1] or per_second or [0])
    headline.set(
        f"{label}: invocations/s against the latency endpoint ({tasks:,} x {duration:g} s tasks, "
        f"concurrency {CONCURRENCY:,})",
        rate, "invocations/s", target=RATE_TARGET, target_op=">=",
        note=(f"{note} Endpoint: {stats['invocations']:,} answered, {stats['throttled']} throttled, "
              f"peak {stats['max_in_flight']} in flight, {stats['connections']:,} TCP connections opened "
              f"(peak {stats['max_connections']} open); answers per second {per_second}; caller CPU "
              f"{1000 * m['caller_cpu_s'] / tasks:.2f} ms per task, endpoint CPU {stats['cpu_s']:.1f} s in "
              f"{m['wall_s']:.1f} s; load {m['load_before']} -> {m['load_after']}."),
        endpoint_stats=stats, caller_cpu_s=round(m["caller_cpu_s"], 3), wall_s=round(m["wall_s"], 3),
        load_before=m["load_before"], load_after=m["load_after"],
    )
    headline.also(f"{label}: peak invocations in flight against the latency endpoint",
                  float(stats["max_in_flight"]), "in flight", target=IN_FLIGHT_TARGET, target_op=">=")
    headline.also(f"{label}: best whole second against the latency endpoint", float(steady), "invocations/s")


@pytest.mark.timeout(1800)
def test_covalent_map_against_latency_endpoint(benchmark: Any, headline: Any, record_rss: None, session: Session,
                                               endpoint: LatencyLambda, bench_size: Any, duration: float) -> None:
    tasks = bench_size(10_000, 40)
    out: dict[str, Any] = {}

    def work() -> None:
        out["results"] = list(lambdarun.map(abs, [-1] * tasks, backend="covalent", session=session))

    m = benchmark.pedantic(lambda: _measure(endpoint, work), rounds=1, iterations=1)
    assert out["results"] == [1] * tasks
    assert m["stats"]["function_errors"] == 0 and m["stats"]["refused"] == 0
    _record(headline, "covalent map", tasks, duration, m,
            "lambdarun.map(abs, ..., backend='covalent') with max_workers = the endpoint's concurrency, target "
            "'aws' pointed at the endpoint; every outcome signed and verified; claims released in a local "
            "folder (storage_url file://), where on AWS they are S3 requests.")


@pytest.mark.timeout(1800)
def test_invoker_threads_against_latency_endpoint(benchmark: Any, headline: Any, record_rss: None, session: Session,
                                                  endpoint: LatencyLambda, bench_size: Any, duration: float) -> None:
    tasks = bench_size(10_000, 40)
    invoker = session.invoker  # the aws target's invoker (lambdarun.lambda_http), as the covalent map uses it
    payload = b'{"lambdarun_covalent_versions": 1}'  # the probe: answered without signing anything

    def one(_: int) -> int:
        return invoker.invoke(FUNCTION, payload).status_code

    def work() -> None:
        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            assert set(pool.map(one, range(tasks))) == {200}

    m = benchmark.pedantic(lambda: _measure(endpoint, work), rounds=1, iterations=1)
    _record(headline, "lambdarun invoker (no backend)", tasks, duration, m,
            f"session.invoker.invoke (lambdarun.lambda_http: botocore's SigV4 signer, urllib3's keep-alive pool) "
            f"from a {CONCURRENCY}-thread pool: the floor under the covalent map, beside plain boto3's.")


@pytest.mark.timeout(1800)
def test_boto3_threads_against_latency_endpoint(benchmark: Any, headline: Any, record_rss: None,
                                                endpoint: LatencyLambda, bench_size: Any, duration: float) -> None:
    import boto3
    from botocore.config import Config

    tasks = bench_size(10_000, 40)
    client = boto3.client(
        "lambda", endpoint_url=endpoint.url, region_name="us-east-1", **endpoint.boto3_credentials(),
        config=Config(max_pool_connections=CONCURRENCY, retries={"mode": "standard", "max_attempts": 10},
                      read_timeout=120),
    )
    payload = b'{"lambdarun_covalent_versions": 1}'  # the probe: answered without signing anything

    def one(_: int) -> int:
        response = client.invoke(FunctionName=FUNCTION, Payload=payload)
        response["Payload"].read()
        return response["StatusCode"]

    def work() -> None:
        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            assert set(pool.map(one, range(tasks))) == {200}

    m = benchmark.pedantic(lambda: _measure(endpoint, work), rounds=1, iterations=1)
    client.close()
    _record(headline, "plain boto3 (no lambdarun)", tasks, duration, m,
            f"boto3 lambda client (max_pool_connections={CONCURRENCY}) shared by a {CONCURRENCY}-thread pool; "
            "the floor under any boto3-based caller in one process.")
