"""Fixtures: a real moto server (DynamoDB, S3) on 127.0.0.1 and parametrized checkpoint stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from lambdarun.local.testing import moto_server_fixture

from lambdarun_durable.stores import DynamoDBCheckpointStore, S3CheckpointStore, SQLiteCheckpointStore
from lambdarun_durable.testing import DurableFunctionTestRunner


moto_endpoint = moto_server_fixture(scope="session")


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="session")
def dynamodb_client(moto_endpoint: str) -> Any:
    return _client("dynamodb", moto_endpoint)


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str) -> Any:
    return _client("s3", moto_endpoint)


def make_store(kind: str, tmp_path: Any, request: pytest.FixtureRequest) -> Any:
    if kind == "sqlite":
        return SQLiteCheckpointStore(str(tmp_path / "durable.db"))
    if kind == "dynamodb":
        client = request.getfixturevalue("dynamodb_client")
        return DynamoDBCheckpointStore(f"durable-{uuid.uuid4().hex[:8]}", client)
    if kind == "s3":
        client = request.getfixturevalue("s3_client")
        bucket = f"durable-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        return S3CheckpointStore(bucket, "executions", client)
    raise ValueError(kind)


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    s = make_store(request.param, tmp_path, request)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "dynamodb", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    s = make_store(request.param, tmp_path, request)
    yield s
    s.close()


@pytest.fixture
def runner_factory(store: Any) -> Iterator[Any]:
    """``runner_factory(handler, **kw)`` -> a DurableFunctionTestRunner on the parametrized store."""
    made: list[DurableFunctionTestRunner] = []

    def make(handler: Any, **kw: Any) -> DurableFunctionTestRunner:
        r = DurableFunctionTestRunner(handler, store=store, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        for t in r._threads.values():
            t.join(timeout=10)
