"""Core benchmarks: import time, envelope encode/decode (and its size overhead)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from lambdarun.calls import decode_call, encode_call
from lambdarun.errors import EnvelopeSignatureError
from lambdarun.plugins import make_plugin_manager
from lambdarun.session import Session

ROOT = Path(__file__).resolve().parents[1]
IMPORT_TARGET_MS = 300


def _import_once(python: str) -> float:
    code = (
        "import time, sys; t = time.perf_counter(); import lambdarun; "
        "ms = (time.perf_counter() - t) * 1000; "
        "assert 'boto3' not in sys.modules, 'boto3 must be imported lazily'; print(ms)"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return float(out.stdout)


def test_import_time(benchmark, headline, record_rss, full_bench):
    """`import lambdarun` in a fresh interpreter (target: under 300 ms, boto3 not imported)."""
    samples: list[float] = []
    benchmark.pedantic(lambda: samples.append(_import_once(sys.executable)), rounds=10 if full_bench else 1, iterations=1)
    headline.set("core: import lambdarun (in-process time, project venv)", statistics.median(samples),
                 target=IMPORT_TARGET_MS, samples_ms=[round(x, 1) for x in samples],
                 note="time measured inside a fresh interpreter around `import lambdarun` (interpreter "
                      "start-up excluded); boto3 must not be imported")


def test_import_time_core_only_fresh_venv(benchmark, headline, record_rss, full_bench, tmp_path):
    """The core alone (no plugins, no extras) installed in a fresh venv, then `import lambdarun`."""
    if not full_bench:
        # smoke mode: the same measurement on this environment (a fresh venv needs PyPI + ~30 s)
        python = sys.executable
    else:
        env_dir = tmp_path / "venv"
        venv.EnvBuilder(with_pip=True).create(env_dir)
        python = str(env_dir / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", str(ROOT)], check=True, timeout=600,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        listing = subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
        assert "lambdarun-covalent" not in listing and "moto" not in listing
    samples: list[float] = []
    benchmark.pedantic(lambda: samples.append(_import_once(python)), rounds=10 if full_bench else 1, iterations=1)
    headline.set("core: import lambdarun (core only, fresh venv)", statistics.median(samples),
                 target=IMPORT_TARGET_MS, samples_ms=[round(x, 1) for x in samples], fresh_venv=full_bench)


@pytest.fixture(scope="module")
def session():
    # signed, as every envelope is by default (a key of its own: no local stack needed)
    overrides = {"signing_key": "benchmark-signing-key-0123456789abcdefgh"}
    with Session(make_plugin_manager(load_entrypoints=False, environ={}), overrides=overrides, environ={}) as s:
        yield s


SIZES = {"small": 64, "1MiB": 1 << 20, "10MiB": 10 << 20}


@pytest.mark.parametrize("size", list(SIZES))
def test_envelope_encode(benchmark, headline, record_rss, session, size, bench_size):
    payload = os.urandom(bench_size(SIZES[size], min(SIZES[size], 4096)))
    data = benchmark(encode_call, session, len, (payload,))
    overhead = len(data) - len(payload)
    headline.set(f"core: envelope encode, {size} argument", payload_bytes=len(payload),
                 wire_bytes=len(data), overhead_pct=round(100 * overhead / len(payload), 3))
    headline.also(f"core: envelope size overhead, {size} argument (+{100 * overhead / len(payload):.3g} %)",
                  overhead, "bytes")


@pytest.mark.parametrize("size", list(SIZES))
def test_envelope_decode(benchmark, headline, record_rss, session, size, bench_size):
    payload = os.urandom(bench_size(SIZES[size], min(SIZES[size], 4096)))
    data = encode_call(session, len, (payload,))
    # the row measures verification: the session has a key and a tampered envelope is refused
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(EnvelopeSignatureError):
        decode_call(session, tampered)
    call = benchmark(decode_call, session, data)
    assert call.args[0] == payload
    headline.set(f"core: envelope decode + verify (HMAC-SHA256, {len(session.signing_key)}-byte key), {size} argument",
                 payload_bytes=len(payload))


#: issue 14: what the at-most-once claim may add to a warm tiny call on the local target
CLAIM_TARGET_MS = 1.0


@pytest.mark.parametrize("store", ["local file store", "S3 on moto's server"])
def test_attempt_claim(benchmark, headline, record_rss, session, tmp_path, store, full_bench):
    """What the at-most-once claim adds to one call. On the call's path (the Lambda side,
    before the response): the conditional create of the claim and the outcome stored with it.
    After the caller has its result (off its latency): the release (tombstone + delete of the
    outcome copy), reported as a second row. The local target keeps claims in a folder
    (``LocalTarget.claims_url``); the aws target in S3 (conditional PutObject), measured here
    against moto's server."""
    import statistics
    import time
    import uuid

    from lambdarun.claims import ClaimStore

    if store == "local file store":
        storage = session.storage((tmp_path / "claims").as_uri())
        server = None
    else:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        s3 = Session(make_plugin_manager(load_entrypoints=False, environ={}), environ={}, overrides={
            "target": "aws", "aws": {"endpoint_url": f"http://{host}:{port}"}})
        s3.target.client("s3").create_bucket(Bucket="claims-bench")
        storage = s3.storage("s3://claims-bench")
    claims = ClaimStore(storage)
    outcome = os.urandom(200)  # a tiny call's outcome envelope
    done: list[tuple[str, int]] = []

    def on_the_call_path():
        task, issued = uuid.uuid4().hex, int(time.time())
        assert claims.claim(task, 1, request_id="r", issued_at=issued) is None
        claims.complete(task, 1, outcome, request_id="r", issued_at=issued)
        done.append((task, issued))

    rounds = 200 if full_bench else 2
    try:
        benchmark.pedantic(on_the_call_path, rounds=rounds, warmup_rounds=5 if full_bench else 0)
        releases = []
        for task, issued in done:
            started = time.perf_counter()
            claims.release(task, 1, issued_at=issued)
            releases.append(time.perf_counter() - started)
    finally:
        if server is not None:
            s3.close()
            server.stop()
    median = headline.median_s()
    local = store == "local file store"
    headline.set(f"core: attempt claim on the call's path (claim + outcome), {store}",
                 median * 1000 if median is not None else None, target=CLAIM_TARGET_MS if local else None)
    headline.also(f"core: attempt claim release after the result, {store}",
                  statistics.median(releases) * 1000 if full_bench else None)
