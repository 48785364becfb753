"""The default serdes is byte-identical to the AWS SDK's extended-type JSON encoding."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from aws_durable_execution_sdk_python import serdes as aws_serdes
from aws_durable_execution_sdk_python.concurrency import models as aws_models
from aws_durable_execution_sdk_python.identifier import OperationIdNamespace as AwsNamespace

from lambdarun_durable import serdes
from lambdarun_durable.concurrency import models
from lambdarun_durable.config import BatchItemStatus
from lambdarun_durable.identifier import OperationIdNamespace
from lambdarun_durable.lambda_service import ErrorObject

VALUES = [
    None, 1, 1.5, "s", True, [1, 2, "x"], [1, [2, 3]], {"a": 1}, {"a": [1, {"b": None}]},
    (1, "a"), b"\x00bytes", uuid.UUID(int=7), decimal.Decimal("1.10"),
    datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC), datetime.date(2024, 5, 6),
    {"nested": {"when": datetime.date(2020, 1, 1), "ids": [uuid.UUID(int=1)]}},
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_same_bytes_as_aws_sdk(value: object) -> None:
    ours = serdes.serialize(None, value, "op", "arn")
    theirs = aws_serdes.serialize(None, value, "op", "arn")
    assert ours == theirs
    assert serdes.deserialize(None, theirs, "op", "arn") == aws_serdes.deserialize(None, ours, "op", "arn")


def test_batch_result_encoding_matches() -> None:
    ours = models.BatchResult(
        [models.BatchItem(0, BatchItemStatus.SUCCEEDED, 5), models.BatchItem(1, BatchItemStatus.FAILED, None, ErrorObject("m", "ValueError", None, None))],
        models.CompletionReason.ALL_COMPLETED,
    )
    from aws_durable_execution_sdk_python.config import BatchItemStatus as AwsStatus
    from aws_durable_execution_sdk_python.lambda_service import ErrorObject as AwsError

    theirs = aws_models.BatchResult(
        [aws_models.BatchItem(0, AwsStatus.SUCCEEDED, 5), aws_models.BatchItem(1, AwsStatus.FAILED, None, AwsError("m", "ValueError", None, None))],
        aws_models.CompletionReason.ALL_COMPLETED,
    )
    assert serdes.serialize(None, ours, "o", "a") == aws_serdes.serialize(None, theirs, "o", "a")
    back = serdes.deserialize(None, aws_serdes.serialize(None, theirs, "o", "a"), "o", "a")
    assert back.get_results() == [5] and back.failure_count == 1


@pytest.mark.parametrize("prefix", [None, "abc", OperationIdNamespace(None).create_id_for_step(3)])
def test_operation_ids_match_aws_sdk(prefix: str | None) -> None:
    for n in (0, 1, 2, 17, 1000):
        assert OperationIdNamespace(prefix).create_id_for_step(n) == AwsNamespace(prefix).create_id_for_step(n)
