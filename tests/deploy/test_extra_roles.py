"""Roles plugins contribute besides the execution role (``RoleResource``), with the temporal
plugin's invoke role for Serverless Workers: deployed on moto (trust policy for one principal
with an External ID, invoke/get on the one function), unchanged on a second deploy, deleted by
destroy; on the local stack its External ID is enforced by the stack's STS."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

import lambdarun_temporal.plugin
from lambdarun.deploy import ContributionError, PolicyStatement, deploy, destroy
from lambdarun.deploy.contributions import RoleResource
from lambdarun.deploy.extra_role import EXTRA_ROLE_POLICY

ACCOUNT = "123456789012"  # moto's account
TEMPORAL = "arn:aws:iam::999999999999:role/temporal-cloud-invoker"


def _doc(document: Any) -> Any:
    return json.loads(document) if isinstance(document, str) else document


def test_the_invoke_role_is_deployed_and_destroyed(aws_session: Any, boto: Any, built: Any) -> None:
    session = aws_session(lambdarun_temporal.plugin, temporal={
        "worker_controller": "server", "temporal_principal": TEMPORAL, "external_id": "ext-0123456789",
        "deployment_name": "orders", "build_id": "v7"})
    fn = session.settings.function_name
    result = deploy(session, package=built)
    created = [a for a in result.applied if a.kind == "extra-role"]
    assert [(a.change.value, a.name) for a in created] == [("create", f"{fn}-temporal-invoke")]
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/{fn}-temporal-invoke"
    function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{fn}"
    assert ("temporal worker deployment create-version" in created[0].reason and function_arn in created[0].reason
            and role_arn in created[0].reason and "--deployment-name orders --build-id v7" in created[0].reason
            and "ext-0123456789" in created[0].reason)

    iam = boto("iam")
    role = iam.get_role(RoleName=f"{fn}-temporal-invoke")["Role"]
    assert _doc(role["AssumeRolePolicyDocument"])["Statement"] == [{
        "Effect": "Allow", "Principal": {"AWS": TEMPORAL}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "ext-0123456789"}}}]
    policy = _doc(iam.get_role_policy(RoleName=f"{fn}-temporal-invoke", PolicyName=EXTRA_ROLE_POLICY)["PolicyDocument"])
    assert policy["Statement"] == [{"Sid": "TemporalServerlessWorkerInvoke", "Effect": "Allow",
                                    "Action": ["lambda:InvokeFunction", "lambda:GetFunction"],
                                    "Resource": [function_arn, function_arn + ":*"]}]
    assert iam.list_role_policies(RoleName=f"{fn}-temporal-invoke")["PolicyNames"] == [EXTRA_ROLE_POLICY]

    assert not deploy(session, package=built).changed  # the same again: nothing to do
    gone = destroy(session)
    assert ("delete", "extra-role") in [(a.change.value, a.kind) for a in gone.applied]
    with pytest.raises(ClientError):
        iam.get_role(RoleName=f"{fn}-temporal-invoke")


def test_a_changed_external_id_updates_the_trust_policy(aws_session: Any, boto: Any, built: Any,
                                                         unique_name: Any) -> None:
    fn = unique_name("fn")
    settings = {"worker_controller": "server", "temporal_principal": TEMPORAL, "external_id": "first-id"}
    deploy(aws_session(lambdarun_temporal.plugin, function_name=fn, temporal=settings), package=built)
    session = aws_session(lambdarun_temporal.plugin, function_name=fn, temporal={**settings, "external_id": "second-id"})
    result = deploy(session, package=built)
    assert ("update", "extra-role") in [(a.change.value, a.kind) for a in result.applied]
    trust = _doc(boto("iam").get_role(RoleName=f"{fn}-temporal-invoke")["Role"]["AssumeRolePolicyDocument"])
    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] == "second-id"
    destroy(session)


def test_on_the_local_stack_the_role_needs_its_external_id(local_session: Any, local_stack: Any, built: Any) -> None:
    session = local_session(lambdarun_temporal.plugin, temporal={
        "worker_controller": "server", "temporal_principal": ACCOUNT, "external_id": "local-ext-42"})
    fn = session.settings.function_name
    deploy(session, package=built)
    sts = local_stack.client("sts", retries={"total_max_attempts": 1})
    arn = f"arn:aws:iam::{ACCOUNT}:role/{fn}-temporal-invoke"
    for kwargs in ({}, {"ExternalId": "local-ext-41"}):
        with pytest.raises(ClientError) as info:
            sts.assume_role(RoleArn=arn, RoleSessionName="temporal", **kwargs)
        assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert sts.assume_role(RoleArn=arn, RoleSessionName="temporal", ExternalId="local-ext-42")["Credentials"]
    destroy(session)


@pytest.mark.parametrize("temporal", [
    {"worker_controller": "server", "temporal_principal": TEMPORAL},  # no External ID
    {"worker_controller": "server", "external_id": "some-id"},  # no principal
    {"worker_controller": "server", "temporal_principal": "*", "external_id": "some-id"},
    {"worker_controller": "server", "temporal_principal": TEMPORAL, "external_id": "x"},  # too short
])
def test_incomplete_or_wide_invoke_roles_are_refused_before_anything_is_created(
        aws_session: Any, boto: Any, built: Any, temporal: dict[str, Any]) -> None:
    session = aws_session(lambdarun_temporal.plugin, temporal=temporal)
    with pytest.raises(ContributionError):
        deploy(session, package=built)
    with pytest.raises(ClientError):
        boto("lambda").get_function(FunctionName=session.settings.function_name)


def test_no_invoke_role_without_the_server_controller(aws_session: Any) -> None:
    from lambdarun.deploy import DeployResources

    for mode in ("auto", "client"):
        session = aws_session(lambdarun_temporal.plugin, temporal={"worker_controller": mode,
                                                                   "temporal_principal": TEMPORAL, "external_id": "an-id"})
        register = DeployResources()
        session.pm.hook.lambdarun_deploy_resources(settings=session.settings, register=register)
        assert register.roles == []


@pytest.mark.parametrize("kwargs", [
    {"principal": "*"}, {"principal": "arn:aws:iam::12:root"}, {"external_id": "a"},
    {"external_id": "has space"}, {"name": "x" * 65}, {"statements": ()},
])
def test_role_resources_are_validated(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {"name": "r", "principal": TEMPORAL, "external_id": "ext-id",
                            "statements": (PolicyStatement("S", ("lambda:InvokeFunction",), ("arn:{partition}:lambda:{region}:{account}:function:{function}",)),)}
    with pytest.raises(ContributionError):
        RoleResource(**{**base, **kwargs})
