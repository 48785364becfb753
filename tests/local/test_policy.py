"""Resource-based policies: AddPermission / GetPolicy / RemovePermission, through boto3 only
(https://docs.aws.amazon.com/lambda/latest/api/API_AddPermission.html,
https://docs.aws.amazon.com/lambda/latest/api/API_GetPolicy.html,
https://docs.aws.amazon.com/lambda/latest/api/API_RemovePermission.html). Kept and answered as
AWS does, not enforced (see lambdarun/local/policy.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.timeout(60)

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
APP = "def handler(event, context):\n    return 'ok'\n"


def _error(err: Any) -> tuple[int, str, str]:
    e = err.value.response
    return e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"], e["Error"]["Message"]


def test_add_get_remove_permission(lam: Any, make_function: Any) -> None:
    name = make_function(APP)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.get_policy(FunctionName=name)
    assert _error(err)[2] == "The resource you requested does not exist."
    before = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    added = lam.add_permission(FunctionName=name, StatementId="s3-invoke", Action="lambda:InvokeFunction",
                               Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::my-bucket",
                               SourceAccount="123456789012", RevisionId=before)
    assert json.loads(added["Statement"]) == {
        "Sid": "s3-invoke", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction", "Resource": f"{ARN}{name}",
        "Condition": {"StringEquals": {"AWS:SourceAccount": "123456789012"},
                      "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"}},
    }
    after = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    assert after != before  # a policy change is a change of the function
    policy = lam.get_policy(FunctionName=name)
    assert policy["RevisionId"] == after
    doc = json.loads(policy["Policy"])
    assert doc["Version"] == "2012-10-17" and [s["Sid"] for s in doc["Statement"]] == ["s3-invoke"]
    with pytest.raises(lam.exceptions.ResourceConflictException) as err:
        lam.add_permission(FunctionName=name, StatementId="s3-invoke", Action="lambda:InvokeFunction",
                           Principal="sns.amazonaws.com")
    assert "The statement id (s3-invoke) provided already exists" in _error(err)[2]
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_permission(FunctionName=name, StatementId="s3-invoke", RevisionId=before)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.remove_permission(FunctionName=name, StatementId="nope")
    assert _error(err)[2] == "Statement nope is not found in resource policy."
    lam.remove_permission(FunctionName=name, StatementId="s3-invoke", RevisionId=after)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b'"ok"'  # not enforced, nothing broken


def test_a_stale_revision_id_adds_nothing(lam: Any, make_function: Any) -> None:
    name = make_function(APP)
    stale = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    lam.update_function_configuration(FunctionName=name, Timeout=5)
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.add_permission(FunctionName=name, StatementId="x", Action="lambda:InvokeFunction",
                           Principal="123456789012", RevisionId=stale)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)


def test_policies_of_an_alias_are_its_own(lam: Any, make_function: Any) -> None:
    name = make_function(APP)
    lam.publish_version(FunctionName=name)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.add_permission(FunctionName=name, Qualifier="live", StatementId="apigw", Action="lambda:InvokeFunction",
                       Principal="apigateway.amazonaws.com", RevisionId=alias["RevisionId"])
    statement = json.loads(lam.get_policy(FunctionName=name, Qualifier="live")["Policy"])["Statement"][0]
    assert statement["Resource"] == f"{ARN}{name}:live"
    assert lam.get_alias(FunctionName=name, Name="live")["RevisionId"] != alias["RevisionId"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)  # the function itself has none
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.add_permission(FunctionName=name, Qualifier="9", StatementId="x", Action="lambda:InvokeFunction",
                           Principal="*")


@pytest.mark.parametrize("overrides, member", [
    ({"Action": "s3:GetObject"}, "action"),
    ({"StatementId": "has space"}, "statementId"),
    ({"Principal": "bad principal!"}, "principal"),
])
def test_malformed_permissions_are_validation_errors(lam_unchecked: Any, make_function: Any,
                                                     overrides: dict[str, str], member: str) -> None:
    name = make_function(APP)
    kwargs = {"FunctionName": name, "StatementId": "ok", "Action": "lambda:InvokeFunction",
              "Principal": "s3.amazonaws.com", **overrides}
    with pytest.raises(ClientError) as err:
        lam_unchecked.add_permission(**kwargs)
    status, code, message = _error(err)
    assert (status, code) == (400, "ValidationException") and f"at '{member}'" in message
    with pytest.raises(lam_unchecked.exceptions.ResourceNotFoundException):
        lam_unchecked.get_policy(FunctionName=name)  # nothing added
