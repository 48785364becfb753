"""Function tags through boto3, and LocalTarget leaving `lambdarun deploy`'s function alone."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdarun.deploy.plan import MANAGED_TAG, MANAGED_VALUE
from lambdarun.local.plugin import LocalTarget
from lambdarun.local.testing import create_function
from lambdarun.types import FunctionSpec

pytestmark = pytest.mark.timeout(60)

DEPLOYED = "def handler(event, context):\n    return 'the deployed zip'\n"


def test_tags_are_stored_listed_added_and_removed(lam: Any, make_function: Any) -> None:
    name = make_function(DEPLOYED, Tags={"team": "a", "env": "dev"})
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    assert lam.get_function(FunctionName=name)["Tags"] == {"team": "a", "env": "dev"}
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "a", "env": "dev"}
    lam.tag_resource(Resource=arn, Tags={"env": "prod", "owner": "me"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "a", "env": "prod", "owner": "me"}
    lam.untag_resource(Resource=arn, TagKeys=["team", "owner"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "prod"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"env": "prod"}


def test_tags_of_a_missing_function_are_not_found(lam: Any) -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:no-such-function"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=arn)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.tag_resource(Resource=arn, Tags={"a": "b"})


def test_ensure_function_leaves_a_deployed_function_unchanged(lam: Any, target: LocalTarget) -> None:
    name = "deployed-by-lambdarun-deploy"
    create_function(lam, name, DEPLOYED, timeout=7, memory_size=256,
                    Tags={MANAGED_TAG: MANAGED_VALUE})
    try:
        before = lam.get_function(FunctionName=name)
        spec = FunctionSpec(name=name, handler="handlers.handler", timeout=30, memory_size=512,
                            environment={"FLAG": "x"}, reserved_concurrency=2)
        assert target.ensure_function(spec) == name
        after = lam.get_function(FunctionName=name)
        assert after["Configuration"] == before["Configuration"]
        # the same package (a presigned URL is signed anew at every GetFunction, as on AWS)
        assert after["Code"]["Location"].split("?")[0] == before["Code"]["Location"].split("?")[0]
        assert after["Code"]["RepositoryType"] == before["Code"]["RepositoryType"]
        assert "Concurrency" not in after
        assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "the deployed zip"
    finally:
        lam.delete_function(FunctionName=name)


def test_ensure_function_replaces_an_untagged_function(lam: Any, target: LocalTarget) -> None:
    name = "not-deployed"
    create_function(lam, name, DEPLOYED, Tags={MANAGED_TAG: "someone-else"})
    try:
        assert target.ensure_function(FunctionSpec(name=name, handler="handlers.handler", timeout=30)) == name
        cfg = lam.get_function_configuration(FunctionName=name)
        assert (cfg["Handler"], cfg["Timeout"]) == ("handlers.handler", 30)
        assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "the cwd"
    finally:
        lam.delete_function(FunctionName=name)
