"""Chaos: connections to the store (DynamoDB, S3 on a real moto server) cut during
checkpoint writes, through :class:`lambdarun.testing.FaultProxy`.

A write whose request is cut before the server got it is retried by botocore; one whose
response is lost after the server applied it is retried too, fails its condition, and the
writer finds its own records already stored (it does not append them twice). The
execution ends SUCCEEDED (or with a typed error, then a resume completes it) with no lost
checkpoint and no step completed twice.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest
from botocore.config import Config
from structlog.testing import capture_logs

from lambdarun.errors import CheckpointConflictError, LambdarunError
from lambdarun.testing import FaultProxy
from lambdarun_durable.lease import LeasePolicy
from lambdarun_durable.orchestrator import Orchestrator
from lambdarun_durable.service import DurableService
from lambdarun_durable.stores import DynamoDBCheckpointStore, S3CheckpointStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import chaos_handler  # noqa: E402
from test_chaos_drivers import assert_each_step_once  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WRITES = {"dynamodb": "TransactWriteItems", "s3": "PutObject"}
#: one-way latencies after which a write's request was applied and its response is on the
#: way back (S3 PutObject takes two round trips: ``Expect: 100-continue``, then the body)
APPLIED = {"dynamodb": 1.5, "s3": 3.5}


def _store_through(kind: str, proxy: FaultProxy, request: pytest.FixtureRequest) -> Any:
    client = boto3.client(
        kind,
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        # a short read timeout: a cut connection can also look like a response that never
        # comes (FaultProxy closes its sockets under blocked reads); the client then retries
        config=Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=2, read_timeout=2),
    )
    name = f"net-{uuid.uuid4().hex[:8]}"
    if kind == "dynamodb":
        return DynamoDBCheckpointStore(name, client), client
    request.getfixturevalue("s3_client").create_bucket(Bucket=name)
    return S3CheckpointStore(name, "executions", client), client


@pytest.mark.parametrize("kind", ["dynamodb", "s3"])
def test_connections_cut_during_checkpoint_writes(
    kind: str, moto_endpoint: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    port = urlparse(moto_endpoint).port
    with FaultProxy(("127.0.0.1", port)) as proxy:
        store, client = _store_through(kind, proxy, request)
        log = tmp_path / "effects.log"
        service = DurableService(store)
        arn = service.start_execution("fn", json.dumps({"log": str(log), "steps": 10, "pause": 0.01}))

        # cut the connection of every other checkpoint write, alternately before its request
        # reaches moto (not applied) and after moto applied it, while its response is on
        # the way back (lost): the write is slowed down (0.2 s each way) to make room
        latency = 0.2
        writes = {"n": 0, "cut": 0}
        timers: list[threading.Timer] = []

        def cut() -> None:
            proxy.drop_all()
            proxy.latency = 0.0

        def before_send(**_: Any) -> None:
            writes["n"] += 1
            if writes["n"] % 2 == 0 and writes["cut"] < 8:
                writes["cut"] += 1
                proxy.latency = latency
                delay = latency * (0.25 if writes["cut"] % 2 else APPLIED[kind])
                timer = threading.Timer(delay, cut)
                timers.append(timer)
                timer.start()

        client.meta.events.register(f"before-send.{client.meta.service_model.endpoint_prefix}.{WRITES[kind]}", before_send)
        driver = Orchestrator(
            service, chaos_handler.in_process_invoke(store), lease=LeasePolicy(ttl=30, heartbeat=1, wait=0)
        )
        with capture_logs() as logs:
            try:
                outcome: Any = driver.run("fn", arn)
            except LambdarunError as e:  # a typed error is an acceptable end of a faulty run
                outcome = e
        for timer in timers:
            timer.join(timeout=10)
        client.meta.events.unregister(f"before-send.{client.meta.service_model.endpoint_prefix}.{WRITES[kind]}", before_send)
        assert proxy.drops >= 6, f"only {proxy.drops} connections were cut"
        if not isinstance(outcome, dict):  # resume once the network is healthy again
            outcome = Orchestrator(service, chaos_handler.in_process_invoke(store)).run("fn", arn)
        assert outcome == {"Status": "SUCCEEDED", "Result": str(sum(range(10)))}
        assert service.describe(arn)["Status"] == "SUCCEEDED"
        assert_each_step_once(service, arn, log, 10)
        # no record was appended twice: every StepStarted/StepSucceeded event is unique per step
        events = service.get_history(arn)["Events"]
        seen = [(e["EventType"], e.get("Name")) for e in events if e["EventType"].startswith("Step")]
        assert len(seen) == len(set(seen)), seen
        landed = [e for e in logs if e["event"] == "durable.checkpoint.landed"]
        print(f"{kind}: {writes['n']} writes, {proxy.drops} cut, {len(landed)} retried writes found landed")


class RetriedAfterLostResponse:
    """A store whose first ``append`` of a version is applied, then 'retried' by the client
    (the response was lost): the retry conflicts, as botocore's retry of a conditional write does."""

    def __init__(self, inner: Any, every: int = 2) -> None:
        self.inner = inner
        self.every = every
        self.appends = 0
        self.replayed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(self, execution_id: str, records: Any, *, expected_version: int, state: Any = None) -> int:
        version = self.inner.append(execution_id, records, expected_version=expected_version, state=state)
        self.appends += 1
        if self.appends % self.every == 0:
            self.replayed += 1
            return self.inner.append(execution_id, records, expected_version=expected_version, state=state)
        return version


def test_a_retried_write_that_landed_is_not_appended_twice(any_store: Any, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    flaky = RetriedAfterLostResponse(any_store)
    service = DurableService(any_store)
    arn = service.start_execution("fn", json.dumps({"log": str(log), "steps": 6, "pause": 0}))
    with pytest.raises(CheckpointConflictError):  # what the writer sees without the landed check
        any_store.append(arn, [], expected_version=0)
    driver = Orchestrator(service, chaos_handler.in_process_invoke(flaky))
    assert driver.run("fn", arn) == {"Status": "SUCCEEDED", "Result": str(sum(range(6)))}
    assert flaky.replayed >= 3
    assert_each_step_once(service, arn, log, 6)
    records = any_store.load(arn).records
    invocation_records = [json.dumps(r, sort_keys=True) for r in records if r.get("S") == "i"]
    assert len(invocation_records) == len(set(invocation_records)), "a landed write was appended again"
