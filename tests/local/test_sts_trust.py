"""The local stack's STS enforces role trust policies (sts:ExternalId, principals) as AWS does,
and accepts the temporary credentials of an allowed AssumeRole (with their session token)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from lambdarun.local import LocalStack
from lambdarun.local.sts_trust import PolicyError, evaluate_trust_policy

_roles = itertools.count()


def _trust(condition: dict[str, Any] | None = None, principal: Any = None, effect: str = "Allow") -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": effect, "Principal": principal or {"AWS": "arn:aws:iam::123456789012:root"},
                                 "Action": "sts:AssumeRole"}
    if condition is not None:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


@pytest.fixture(scope="module")
def iam(local_stack: LocalStack) -> Any:
    return local_stack.client("iam")


@pytest.fixture(scope="module")
def sts(local_stack: LocalStack) -> Any:
    return local_stack.client("sts", retries={"total_max_attempts": 1})


@pytest.fixture
def make_role(iam: Any) -> Any:
    created: list[str] = []

    def make(document: dict[str, Any] | str) -> str:
        name = f"trust-{next(_roles)}"
        text = document if isinstance(document, str) else json.dumps(document)
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=text)["Role"]["Arn"]
        created.append(name)
        return str(arn)

    yield make
    for name in created:
        iam.delete_role(RoleName=name)


def _denied(sts: Any, role: str, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        sts.assume_role(RoleArn=role, RoleSessionName="sess", **kwargs)
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "AccessDenied"
    assert error["Error"]["Message"] == (
        f"User: arn:aws:sts::123456789012:user/moto is not authorized to perform: sts:AssumeRole on resource: {role}")
    return error


EXTERNAL = {"StringEquals": {"sts:ExternalId": "tenant-42"}}


def test_external_id_required(sts: Any, make_role: Any) -> None:
    role = make_role(_trust(EXTERNAL))
    _denied(sts, role)  # the missing-key case moto alone lets through
    _denied(sts, role, ExternalId="tenant-41")
    _denied(sts, role, ExternalId="TENANT-42")  # StringEquals is case-sensitive
    creds = sts.assume_role(RoleArn=role, RoleSessionName="sess", ExternalId="tenant-42")["Credentials"]
    assert creds["AccessKeyId"] and creds["SessionToken"]


def test_external_id_of_another_role_is_refused(sts: Any, make_role: Any) -> None:
    role_a = make_role(_trust({"StringEquals": {"sts:ExternalId": "id-a"}}))
    role_b = make_role(_trust({"StringEquals": {"sts:ExternalId": "id-b"}}))
    sts.assume_role(RoleArn=role_a, RoleSessionName="sess", ExternalId="id-a")
    _denied(sts, role_b, ExternalId="id-a")  # replaying A's External ID against B


def test_role_without_external_id_condition_is_allowed(sts: Any, make_role: Any) -> None:
    role = make_role(_trust())
    sts.assume_role(RoleArn=role, RoleSessionName="sess")
    sts.assume_role(RoleArn=role, RoleSessionName="sess", ExternalId="anything")  # as on AWS


def test_principal_is_evaluated(sts: Any, make_role: Any) -> None:
    _denied(sts, make_role(_trust(principal={"Service": "lambda.amazonaws.com"})))
    _denied(sts, make_role(_trust(principal={"AWS": "arn:aws:iam::999999999999:root"})))
    sts.assume_role(RoleArn=make_role(_trust(principal={"AWS": "123456789012"})), RoleSessionName="sess")
    sts.assume_role(RoleArn=make_role(_trust(principal="*")), RoleSessionName="sess")


def test_explicit_deny_wins(sts: Any, make_role: Any) -> None:
    doc = _trust()
    doc["Statement"].append({"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole",
                             "Condition": {"StringLike": {"sts:RoleSessionName": "blocked-*"}}})
    role = make_role(doc)
    sts.assume_role(RoleArn=role, RoleSessionName="fine")
    with pytest.raises(ClientError) as info:
        sts.assume_role(RoleArn=role, RoleSessionName="blocked-1")
    assert info.value.response["Error"]["Code"] == "AccessDenied"


def test_unknown_role_is_refused(sts: Any) -> None:
    _denied(sts, "arn:aws:iam::123456789012:role/no-such-role", ExternalId="xx")


@pytest.mark.parametrize("document", [
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole",
                                             "Condition": {"StringEqualsSomething": {"sts:ExternalId": "x"}}}]},
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": "x"},
                                             "Action": "sts:AssumeRole"}]},
    {"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "sts:AssumeRole"}]},
])
def test_malformed_trust_policies_are_refused(sts: Any, make_role: Any, document: dict[str, Any]) -> None:
    role = make_role(document)
    _denied(sts, role, ExternalId="xx")


def test_issued_credentials_are_accepted_with_their_token_only(local_stack: LocalStack, sts: Any,
                                                                make_role: Any) -> None:
    role = make_role(_trust(EXTERNAL))
    creds = sts.assume_role(RoleArn=role, RoleSessionName="sess", ExternalId="tenant-42")["Credentials"]
    endpoint = local_stack.endpoints.lambda_
    cfg = Config(retries={"total_max_attempts": 1})

    def lam(token: str | None) -> Any:
        return boto3.client("lambda", endpoint_url=endpoint, region_name=local_stack.region, config=cfg,
                            aws_access_key_id=creds["AccessKeyId"],
                            aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=token)

    assert "Functions" in lam(creds["SessionToken"]).list_functions()
    for token in (None, creds["SessionToken"][:-2] + "xx"):
        with pytest.raises(ClientError) as info:
            lam(token).list_functions()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] in (401, 403)
    # the same credentials on moto's endpoint (S3 here)
    s3 = boto3.client("s3", endpoint_url=local_stack.endpoints.moto, region_name=local_stack.region, config=cfg,
                      aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                      aws_session_token=creds["SessionToken"])
    assert "Buckets" in s3.list_buckets()


def test_forged_credentials_are_refused(local_stack: LocalStack) -> None:
    lam = boto3.client("lambda", endpoint_url=local_stack.endpoints.lambda_, region_name=local_stack.region,
                       config=Config(retries={"total_max_attempts": 1}),
                       aws_access_key_id="ASIAFORGED0000000000", aws_secret_access_key="x" * 40,
                       aws_session_token="forged")
    with pytest.raises(ClientError) as info:
        lam.list_functions()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] in (401, 403)


@pytest.mark.parametrize(("condition", "context", "allowed"), [
    ({"StringEquals": {"sts:ExternalId": ["a", "b"]}}, {"sts:ExternalId": "b"}, True),
    ({"StringLike": {"sts:ExternalId": "ten*-?"}}, {"sts:ExternalId": "tenant-7"}, True),
    ({"StringLike": {"sts:ExternalId": "ten*-?"}}, {"sts:ExternalId": "tenant-77"}, False),
    ({"StringNotEquals": {"sts:ExternalId": "a"}}, {}, True),
    ({"StringEqualsIfExists": {"sts:ExternalId": "a"}}, {}, True),
    ({"StringEqualsIgnoreCase": {"sts:ExternalId": "ABC"}}, {"sts:ExternalId": "abc"}, True),
    ({"Null": {"sts:ExternalId": "false"}}, {}, False),
    ({"Null": {"sts:ExternalId": "false"}}, {"sts:ExternalId": "x"}, True),
    ({"StringEquals": {"sts:externalid": "a"}}, {"sts:ExternalId": "a"}, True),  # keys: any case
])
def test_condition_operators(condition: dict[str, Any], context: dict[str, str], allowed: bool) -> None:
    assert evaluate_trust_policy(_trust(condition), caller_arn="arn:aws:iam::123456789012:user/u",
                                 account="123456789012", context=context) is allowed


@pytest.mark.parametrize("document", ["{not json", "[]", json.dumps({"Version": "2012-10-17"}),
                                      json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*"}]})])
def test_unparseable_documents_raise(document: str) -> None:
    with pytest.raises(PolicyError):
        evaluate_trust_policy(document, caller_arn="arn:aws:iam::1:user/u", account="1", context={})


def _raw_sts(stack: LocalStack, *, query: str = "", body: str = "") -> tuple[int, str]:
    """A signed STS call with this exact query string and form body; (status, body)."""
    import urllib.error
    import urllib.request

    url = stack.endpoints.moto + "/" + (f"?{query}" if query else "")
    from lambdarun.local.auth import signed_request

    request = signed_request(url, stack.credentials, method="POST", data=body.encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"},
                             region=stack.region, service="sts")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_parameter_pollution_is_refused(local_stack: LocalStack, make_role: Any) -> None:
    """A second Action/RoleArn/ExternalId in the query string or body cannot make moto act on
    another request than the one evaluated."""
    from urllib.parse import quote

    guarded = make_role(_trust(EXTERNAL))
    open_role = make_role(_trust())
    base = "Version=2011-06-15&RoleSessionName=sess"
    attacks = [
        # the gate would evaluate the open role, moto might assume the guarded one
        (f"Action=AssumeRole&RoleArn={quote(open_role)}", f"Action=AssumeRole&RoleArn={quote(guarded)}&{base}"),
        ("", f"Action=AssumeRole&RoleArn={quote(guarded)}&RoleArn={quote(open_role)}&{base}"),
        ("Action=GetCallerIdentity", f"Action=AssumeRole&RoleArn={quote(guarded)}&{base}"),
        ("", f"Action=AssumeRole&RoleArn={quote(guarded)}&ExternalId=tenant-42&ExternalId=x&{base}"),
    ]
    for query, body in attacks:
        status, text = _raw_sts(local_stack, query=query, body=body)
        assert status == 403 and "AccessDenied" in text and "<SecretAccessKey>" not in text, (query, body, text)
    # the same call, clean, works
    status, text = _raw_sts(local_stack, body=f"Action=AssumeRole&RoleArn={quote(guarded)}&ExternalId=tenant-42&{base}")
    assert status == 200 and "<SecretAccessKey>" in text


def test_assume_role_in_the_query_string_is_evaluated(local_stack: LocalStack, make_role: Any) -> None:
    from urllib.parse import quote

    guarded = make_role(_trust(EXTERNAL))
    status, text = _raw_sts(local_stack, query=f"Action=AssumeRole&RoleArn={quote(guarded)}&RoleSessionName=sess"
                                                "&Version=2011-06-15")
    assert status == 403 and "AccessDenied" in text
