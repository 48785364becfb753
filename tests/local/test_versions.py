"""Versions, aliases, qualified invokes and RevisionId preconditions, through boto3 only.

AWS docs: https://docs.aws.amazon.com/lambda/latest/dg/configuration-versions.html,
https://docs.aws.amazon.com/lambda/latest/dg/configuration-aliases.html,
https://docs.aws.amazon.com/lambda/latest/api/API_PublishVersion.html,
https://docs.aws.amazon.com/lambda/latest/api/API_UpdateAlias.html (PreconditionFailedException 412),
https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html (X-Amz-Executed-Version).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lambdarun.local.testing import make_zip

pytestmark = pytest.mark.timeout(120)

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"

SOURCE = """
import os
MARK = {mark!r}
def handler(event, context):
    return {{"mark": MARK, "env": os.environ.get("STAGE"), "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
             "arn": context.invoked_function_arn}}
"""


def _invoke(lam: Any, name: str, qualifier: str | None = None) -> tuple[dict[str, Any], str]:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    r = lam.invoke(FunctionName=name, Payload=b"{}", **kwargs)
    assert "FunctionError" not in r, r["Payload"].read()
    return json.loads(r["Payload"].read()), r["ExecutedVersion"]


def _code(lam: Any, name: str, mark: str) -> dict[str, Any]:
    return lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": SOURCE.format(mark=mark)}))


def _error(err: Any) -> tuple[int, str, str]:
    e = err.value.response
    return e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"], e["Error"]["Message"]


def test_a_version_is_an_immutable_snapshot_and_latest_keeps_changing(lam: Any, make_function: Any) -> None:
    name = make_function(SOURCE.format(mark="one"), environment={"STAGE": "a"})
    v1 = lam.publish_version(FunctionName=name, Description="first")
    assert v1["Version"] == "1" and v1["FunctionArn"] == f"{ARN}{name}:1"
    assert v1["Description"] == "first"
    _code(lam, name, "two")
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"STAGE": "b"}})
    v2 = lam.publish_version(FunctionName=name)
    assert v2["Version"] == "2" and v2["CodeSha256"] != v1["CodeSha256"]
    # each qualifier runs its own code and configuration, and says which version ran
    assert _invoke(lam, name, "1") == ({"mark": "one", "env": "a", "version": "1", "arn": f"{ARN}{name}:1"}, "1")
    assert _invoke(lam, name, "2")[0]["mark"] == "two"
    assert _invoke(lam, name) == ({"mark": "two", "env": "b", "version": "$LATEST", "arn": f"{ARN}{name}"}, "$LATEST")
    # a version's environment never serves $LATEST: change $LATEST, version 1 is unchanged
    _code(lam, name, "three")
    assert _invoke(lam, name)[0]["mark"] == "three"
    assert _invoke(lam, name, "1")[0]["mark"] == "one"
    assert _invoke(lam, f"{ARN}{name}:2")[0]["mark"] == "two"  # a qualified ARN
    assert _invoke(lam, f"{name}:1")[0]["mark"] == "one"       # name:qualifier
    got = lam.get_function(FunctionName=name, Qualifier="1")["Configuration"]
    assert (got["Version"], got["Environment"]["Variables"]) == ("1", {"STAGE": "a"})
    versions = [v["Version"] for p in lam.get_paginator("list_versions_by_function").paginate(FunctionName=name)
                for v in p["Versions"]]
    assert versions == ["$LATEST", "1", "2"]


def test_publish_without_a_change_returns_the_last_version(lam: Any, make_function: Any) -> None:
    name = make_function(SOURCE.format(mark="x"))
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, Timeout=9)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"


def test_publish_checks_code_sha256_and_revision_id(lam: Any, make_function: Any) -> None:
    name = make_function(SOURCE.format(mark="x"))
    cfg = lam.get_function_configuration(FunctionName=name)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.publish_version(FunctionName=name, CodeSha256="AAAA")
    assert "is different from current CodeSHA256 in $LATEST" in _error(err)[2]
    with pytest.raises(ClientError) as err:
        lam.publish_version(FunctionName=name, RevisionId="00000000-0000-0000-0000-000000000000")
    assert _error(err)[:2] == (412, "PreconditionFailedException")
    assert lam.list_versions_by_function(FunctionName=name)["Versions"][1:] == []  # nothing published
    v = lam.publish_version(FunctionName=name, CodeSha256=cfg["CodeSha256"], RevisionId=cfg["RevisionId"])
    assert v["Version"] == "1"


def test_stale_revision_id_is_a_precondition_failure(lam: Any, make_function: Any) -> None:
    """Every change makes a new RevisionId; a stale one is refused with 412 and changes nothing."""
    name = make_function(SOURCE.format(mark="x"))
    first = lam.get_function(FunctionName=name)["Configuration"]["RevisionId"]
    second = lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId=first)["RevisionId"]
    assert second != first
    with pytest.raises(lam.exceptions.PreconditionFailedException) as err:
        lam.update_function_configuration(FunctionName=name, Timeout=6, RevisionId=first)
    assert _error(err) == (412, "PreconditionFailedException",
                           "The Revision Id provided does not match the latest Revision Id. "
                           "Call the GetFunction/GetAlias API to retrieve the latest Revision Id")
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_code(FunctionName=name, RevisionId=first,
                                 ZipFile=make_zip({"app.py": SOURCE.format(mark="lost")}))
    assert lam.get_function_configuration(FunctionName=name)["Timeout"] == 5
    assert _invoke(lam, name)[0]["mark"] == "x"
    third = lam.update_function_code(FunctionName=name, RevisionId=second,
                                     ZipFile=make_zip({"app.py": SOURCE.format(mark="y")}))["RevisionId"]
    assert third not in (first, second)


def test_aliases_route_and_keep_revisions(lam: Any, make_function: Any) -> None:
    name = make_function(SOURCE.format(mark="one"))
    lam.publish_version(FunctionName=name)
    _code(lam, name, "two")
    lam.publish_version(FunctionName=name)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="prod")
    assert alias["AliasArn"] == f"{ARN}{name}:live" and alias["FunctionVersion"] == "1"
    assert lam.get_alias(FunctionName=name, Name="live")["RevisionId"] == alias["RevisionId"]
    out, executed = _invoke(lam, name, "live")
    assert (out["mark"], executed) == ("one", "1")
    assert out["arn"] == f"{ARN}{name}:live"  # the ARN it was invoked by (how code finds its alias)
    assert lam.get_function(FunctionName=name, Qualifier="live")["Configuration"]["Version"] == "1"
    # weighted routing: half to version 2
    updated = lam.update_alias(FunctionName=name, Name="live", RevisionId=alias["RevisionId"],
                               RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert updated["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    assert updated["RevisionId"] != alias["RevisionId"]
    ran = Counter(_invoke(lam, name, "live")[1] for _ in range(60))
    assert set(ran) == {"1", "2"}, ran  # P(one side never chosen in 60) < 1e-17
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RevisionId=alias["RevisionId"])
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_alias(FunctionName=name, Name="live", Description="x", RevisionId="stale")
    full = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2",
                            RoutingConfig={"AdditionalVersionWeights": {}})
    assert "RoutingConfig" not in full or full["RoutingConfig"] == {"AdditionalVersionWeights": {}}
    assert all(_invoke(lam, name, "live")[1] == "2" for _ in range(5))
    lam.create_alias(FunctionName=name, Name="dev", FunctionVersion="$LATEST")
    names = [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]]
    assert names == ["dev", "live"]
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name, FunctionVersion="2")["Aliases"]] == ["live"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_alias(FunctionName=name, Name="dev", FunctionVersion="1")
    lam.delete_alias(FunctionName=name, Name="dev")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="dev")


def test_versions_named_by_an_alias_cannot_be_deleted(lam: Any, make_function: Any) -> None:
    name = make_function(SOURCE.format(mark="one"))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceConflictException) as err:
        lam.delete_function(FunctionName=name, Qualifier="1")
    assert _error(err)[0] == 409 and "[live]" in _error(err)[2]
    assert _invoke(lam, name, "1")[0]["mark"] == "one"  # nothing lost
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert "$LATEST version cannot be deleted" in _error(err)[2]
    lam.delete_alias(FunctionName=name, Name="live")
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.invoke(FunctionName=name, Qualifier="1", Payload=b"{}")
    assert _error(err)[2] == f"Function not found: {ARN}{name}:1"
    assert _invoke(lam, name)[0]["mark"] == "one"  # $LATEST still has its code
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name, Qualifier="7")


@pytest.mark.parametrize("routing, code", [
    ({"2": 0.5, "3": 0.2}, "InvalidParameterValueException"),    # more than one additional version
    ({"1": 0.5}, "InvalidParameterValueException"),              # the primary version itself
    ({"9": 0.5}, "ResourceNotFoundException"),                   # an unknown version
    ({"2": 1.5}, "ValidationException"),                         # weight over 1 (the model's max)
    ({"2": -0.1}, "ValidationException"),                        # negative weight
    ({"$LATEST": 0.5}, "ValidationException"),                   # not a version number (model pattern)
])
def test_bad_alias_routing_is_refused(lam_unchecked: Any, make_function: Any, routing: dict[str, float],
                                      code: str) -> None:
    lam = lam_unchecked
    name = make_function(SOURCE.format(mark="one"))
    for _ in range(3):
        lam.update_function_configuration(FunctionName=name, Description=str(_))
        lam.publish_version(FunctionName=name)
    with pytest.raises(ClientError) as err:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": routing})
    assert _error(err)[1] == code, _error(err)
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []  # nothing was created


@pytest.mark.parametrize("qualifier", ["1 2", "../1", "a" * 129, "live!", "1;rm", "%00"])
def test_malformed_qualifiers_are_validation_errors(lam_unchecked: Any, make_function: Any, qualifier: str,
                                                    tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    name = make_function(f"def handler(event, context):\n    open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ClientError) as err:
        lam_unchecked.invoke(FunctionName=name, Qualifier=qualifier, Payload=b"{}")
    status, code, message = _error(err)
    assert (status, code) == (400, "ValidationException")
    assert message.startswith("1 validation error detected: Value ") and "at 'qualifier'" in message
    for unknown in ("7", "nosuchalias"):  # well-formed but unknown: 404
        with pytest.raises(lam_unchecked.exceptions.ResourceNotFoundException):
            lam_unchecked.invoke(FunctionName=name, Qualifier=unknown, Payload=b"{}")
    assert not marker.exists()  # nothing ran
    lam_unchecked.invoke(FunctionName=name, Payload=b"{}")
    assert marker.exists()  # the marker works: the function does run when invoked properly


def test_alias_names_follow_the_model(lam_unchecked: Any, make_function: Any) -> None:
    name = make_function(SOURCE.format(mark="one"))
    with pytest.raises(ClientError) as err:
        lam_unchecked.create_alias(FunctionName=name, Name="123", FunctionVersion="$LATEST")
    assert _error(err)[:2] == (400, "ValidationException")  # all digits: that is a version
    assert "at 'name'" in _error(err)[2]


def test_versions_and_aliases_survive_a_restart(tmp_path: Any) -> None:
    """A persisting (shared) stack keeps versions and aliases with its functions."""
    from lambdarun.local import LocalStack
    from lambdarun.local.testing import create_function

    def start() -> LocalStack:
        return LocalStack(tmp_path / "state", reuse=False, shared=True, stop_at_exit=False).start()

    stack = start()
    try:
        lam = stack.client("lambda", retries={"total_max_attempts": 1})
        create_function(lam, "kept", SOURCE.format(mark="one"))
        lam.publish_version(FunctionName="kept")
        _code(lam, "kept", "two")
        lam.create_alias(FunctionName="kept", Name="live", FunctionVersion="1")
        lam.add_permission(FunctionName="kept", Qualifier="live", StatementId="sns", Principal="sns.amazonaws.com",
                           Action="lambda:InvokeFunction")
        revision = lam.get_alias(FunctionName="kept", Name="live")["RevisionId"]
    finally:
        stack.stop()
    stack = start()
    try:
        lam = stack.client("lambda", retries={"total_max_attempts": 1})
        assert _invoke(lam, "kept", "live") == ({"mark": "one", "env": None, "version": "1", "arn": f"{ARN}kept:live"}, "1")
        assert _invoke(lam, "kept")[0]["mark"] == "two"
        assert lam.get_alias(FunctionName="kept", Name="live")["RevisionId"] == revision
        policy = json.loads(lam.get_policy(FunctionName="kept", Qualifier="live")["Policy"])
        assert [st["Sid"] for st in policy["Statement"]] == ["sns"]
        assert lam.publish_version(FunctionName="kept")["Version"] == "2"
    finally:
        stack.stop()


def test_event_invokes_of_a_version_run_that_version(lam: Any, make_function: Any, local_stack: Any) -> None:
    """An Event (asynchronous) invoke with a Qualifier runs the version's code."""
    s3 = local_stack.client("s3")
    s3.create_bucket(Bucket="version-events")
    writer = """
import boto3
MARK = {mark!r}
def handler(event, context):
    boto3.client("s3").put_object(Bucket="version-events", Key=event["key"], Body=MARK.encode())
    return MARK
"""
    name = make_function(writer.format(mark="one"))
    lam.publish_version(FunctionName=name)
    _code(lam, name, "two")
    r = lam.invoke(FunctionName=name, Qualifier="1", InvocationType="Event",
                   Payload=json.dumps({"key": name}).encode())
    assert r["StatusCode"] == 202
    waiter = s3.get_waiter("object_exists")
    waiter.wait(Bucket="version-events", Key=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    assert s3.get_object(Bucket="version-events", Key=name)["Body"].read() == b"one"


def test_list_functions_all_versions(lam: Any, make_function: Any) -> None:
    name = make_function(SOURCE.format(mark="one"))
    lam.publish_version(FunctionName=name)
    every = [(f["FunctionName"], f["Version"]) for p in lam.get_paginator("list_functions").paginate(FunctionVersion="ALL")
             for f in p["Functions"]]
    assert (name, "$LATEST") in every and (name, "1") in every
    latest = [(f["FunctionName"], f["Version"]) for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]]
    assert (name, "1") not in latest


def test_tags_belong_to_the_function_not_its_versions(lam: Any, make_function: Any) -> None:
    """https://docs.aws.amazon.com/lambda/latest/dg/configuration-tags.html: tags apply to the
    function; a version or alias ARN is refused."""
    name = make_function(SOURCE.format(mark="one"))
    lam.publish_version(FunctionName=name)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.tag_resource(Resource=f"{ARN}{name}:1", Tags={"team": "x"})
    lam.tag_resource(Resource=f"{ARN}{name}", Tags={"team": "x"})
    assert lam.list_tags(Resource=f"{ARN}{name}")["Tags"] == {"team": "x"}


def test_a_failed_event_of_a_version_names_that_version(lam: Any, make_function: Any, local_stack: Any) -> None:
    """The on-failure record of an Event invoke of version 1 says version 1
    (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html);
    the version's own event-invoke config (no retries) applies, not $LATEST's."""
    import time

    name = make_function("def handler(event, context):\n    raise RuntimeError('version one fails')\n")
    lam.publish_version(FunctionName=name)
    lam.put_function_event_invoke_config(FunctionName=name, Qualifier="1", MaximumRetryAttempts=0)
    lam.invoke(FunctionName=name, Qualifier="1", InvocationType="Event", Payload=b"{}")
    failures = local_stack.run_dir / "logs" / name / "async-failures.jsonl"
    deadline = time.monotonic() + 60
    while not (failures.exists() and failures.read_text().strip()):
        assert time.monotonic() < deadline, "no failure record"
        time.sleep(0.05)
    record = json.loads(failures.read_text().splitlines()[0])
    assert record["requestContext"]["functionArn"] == f"{ARN}{name}:1"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["responseContext"]["executedVersion"] == "1"


def test_publish_on_create_and_on_code_update(lam: Any, local_stack: Any) -> None:
    """CreateFunction/UpdateFunctionCode with Publish=True answer the new version
    (https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html#lambda-CreateFunction-request-Publish)."""
    from lambdarun.local.testing import create_function

    created = create_function(lam, "published-at-create", SOURCE.format(mark="one"), Publish=True)
    try:
        assert (created["Version"], created["FunctionArn"]) == ("1", f"{ARN}published-at-create:1")
        updated = lam.update_function_code(FunctionName="published-at-create", Publish=True,
                                           ZipFile=make_zip({"app.py": SOURCE.format(mark="two")}))
        assert updated["Version"] == "2"
        assert _invoke(lam, "published-at-create", "1")[0]["mark"] == "one"
        assert _invoke(lam, "published-at-create", "2")[0]["mark"] == "two"
    finally:
        lam.delete_function(FunctionName="published-at-create")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="published-at-create", Qualifier="1", Payload=b"{}")
    # every version's extracted code (and uploaded zip) went with the function
    assert not (local_stack.run_dir / "functions" / "published-at-create").exists()


def test_a_qualifier_in_the_name_must_match_the_qualifier_given(lam: Any, make_function: Any, tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    name = make_function(f"def handler(event, context):\n    open({str(marker)!r}, 'w').close()\n")
    lam.publish_version(FunctionName=name)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.invoke(FunctionName=f"{name}:1", Qualifier="$LATEST", Payload=b"{}")
    assert "does not match the specified qualifier" in _error(err)[2]
    assert not marker.exists()
    assert lam.invoke(FunctionName=f"{name}:1", Qualifier="1", Payload=b"{}")["ExecutedVersion"] == "1"
