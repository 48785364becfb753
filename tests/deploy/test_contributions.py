"""Resources plugins contribute through ``lambdarun_deploy_resources``: deployed for real on
moto (table with the declared key, statement in the role's policy, variable in the
function), and invalid contributions refused before anything is created."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdarun import hookimpl
from lambdarun.deploy import (
    ContributionError,
    DeployResources,
    KeyAttribute,
    PolicyStatement,
    TableResource,
    deploy,
    destroy,
    session_spec,
)
from lambdarun.deploy.policy import POLICY_NAME

ACCOUNT = "123456789012"  # moto's account


class Contributes:
    """A test plugin declaring what it needs deployed (``table`` is the table's name)."""

    def __init__(self, table: str, *, environment: dict[str, str] | None = None, statement: Any = None) -> None:
        self.table = table
        self.environment = environment if environment is not None else {"EXAMPLE_PLUGIN_MODE": "fast"}
        self.statement = statement

    @hookimpl
    def lambdarun_deploy_resources(self, settings: Any, register: DeployResources) -> None:
        register.add_table(TableResource(self.table, keys=(KeyAttribute("id", "N", "HASH"),), purpose="example items", sid="ExampleItems"))
        register.add_statement(
            self.statement
            or PolicyStatement(
                sid="ExampleQueue",
                actions=("sqs:SendMessage",),
                resources=("arn:{partition}:sqs:{region}:{account}:{function}-queue",),
            )
        )
        for name, value in self.environment.items():
            register.add_environment(name, value)


def _exists(call: Any, *codes: str) -> bool:
    try:
        call()
        return True
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code", "") in codes or type(exc).__name__ in codes:
            return False
        raise


def test_the_hook_collects_every_plugins_contribution(aws_session, unique_name, durable_tables):
    table = unique_name("items")
    session = aws_session(Contributes(table), durable_tables, deploy={"table": unique_name("ckpt")})
    register = DeployResources()
    session.pm.hook.lambdarun_deploy_resources(settings=session.settings, register=register)
    assert sorted(t.name for t in register.tables) == sorted([table, session.settings.section("deploy").table])
    # the durable plugin's: checkpointing its own durable executions
    assert sorted(s.sid for s in register.statements) == ["ExampleQueue", "LambdarunDurableExecution"]
    assert register.environment == {"EXAMPLE_PLUGIN_MODE": "fast"}


def test_contributed_resources_are_deployed_and_destroyed(aws_session, boto, built, unique_name):
    table = unique_name("items")
    session = aws_session(Contributes(table))
    fn = session.settings.function_name
    result = deploy(session, package=built)
    assert ("create", "table") in [(a.change.value, a.kind) for a in result.applied]

    ddb = boto("dynamodb")
    desc = ddb.describe_table(TableName=table)["Table"]
    assert desc["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert desc["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "N"}]
    doc = boto("iam").get_role_policy(RoleName=f"{fn}-role", PolicyName=POLICY_NAME)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["ExampleQueue"] == {
        "Sid": "ExampleQueue",
        "Effect": "Allow",
        "Action": "sqs:SendMessage",
        "Resource": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{fn}-queue",
    }
    table_arn = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{table}"
    assert by_sid["ExampleItems"]["Resource"] == [table_arn, f"{table_arn}/index/*"]
    env = boto("lambda").get_function_configuration(FunctionName=fn)["Environment"]["Variables"]
    assert env["EXAMPLE_PLUGIN_MODE"] == "fast"

    # the same contributions again: nothing to do
    assert not deploy(session, package=built).changed
    gone = destroy(session)
    assert ("delete", "table") in [(a.change.value, a.kind) for a in gone.applied]
    assert not _exists(lambda: ddb.describe_table(TableName=table), "ResourceNotFoundException")


def test_a_table_deploy_did_not_create_is_kept(aws_session, boto, built, unique_name):
    table = unique_name("theirs")
    ddb = boto("dynamodb")
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    session = aws_session(Contributes(table))
    plan = deploy(session, package=built)
    assert [a for a in plan.plan.actions if a.kind == "table"][0].change.value == "no-op"
    destroy(session)
    assert _exists(lambda: ddb.describe_table(TableName=table), "ResourceNotFoundException")
    ddb.delete_table(TableName=table)


def _nothing_created(boto: Any, session: Any, table: str) -> None:
    fn = session.settings.function_name
    bucket = session.settings.storage_url.split("/")[2]
    assert not _exists(lambda: boto("lambda").get_function(FunctionName=fn), "ResourceNotFoundException")
    assert not _exists(lambda: boto("iam").get_role(RoleName=f"{fn}-role"), "NoSuchEntity")
    assert not _exists(lambda: boto("dynamodb").describe_table(TableName=table), "ResourceNotFoundException")
    assert not _exists(lambda: boto("s3").head_bucket(Bucket=bucket), "404", "NoSuchBucket")
    assert not _exists(
        lambda: boto("secretsmanager").describe_secret(SecretId=f"lambdarun/{fn}/signing-key"), "ResourceNotFoundException"
    )


@pytest.mark.parametrize(
    "environment",
    [
        {"LAMBDARUN_STORAGE_URL": "s3://attacker-bucket/x"},  # would redirect payloads
        {"LAMBDARUN_SIGNING_KEY_SECRET": "attacker/secret"},  # would swap the signing key
        {"LAMBDARUN_SIGNING_KEY": "k" * 64},  # a key in the environment
        {"LAMBDARUN_TARGET": "local"},
        {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"},  # Lambda's own
        {"_HANDLER": "evil.handler"},
        {"BAD-NAME": "x"},
        {"LAMBDARUN_LOG_LEVEL": "DEBUG"},  # a setting deploy forwards (log_level is set below)
    ],
    ids=lambda env: next(iter(env)),
)
def test_contributed_variables_never_replace_deploys_own(aws_session, boto, built, unique_name, environment):
    table = unique_name("items")
    session = aws_session(Contributes(table, environment=environment), log_level="INFO")
    with pytest.raises(ContributionError):
        deploy(session, package=built)
    _nothing_created(boto, session, table)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PolicyStatement(sid="All", actions=("*",), resources=("arn:aws:s3:::b/*",)),
        lambda: PolicyStatement(sid="AllS3", actions=("s3:*",), resources=("arn:aws:s3:::b/*",)),
        lambda: PolicyStatement(sid="Everywhere", actions=("s3:GetObject",), resources=("*",)),
        lambda: PolicyStatement(sid="AnyArn", actions=("s3:GetObject",), resources=("arn:*",)),
        lambda: PolicyStatement(sid="Nothing", actions=("s3:GetObject",), resources=()),
        lambda: PolicyStatement(sid="", actions=("s3:GetObject",), resources=("arn:aws:s3:::b/*",)),
        lambda: PolicyStatement(sid="Sneaky", actions=("s3:GetObject",), resources=("arn:aws:s3:::{account.__class__}",)),
        lambda: PolicyStatement(sid="Conv", actions=("s3:GetObject",), resources=("arn:aws:s3:::{account!r}",)),
        lambda: PolicyStatement(sid="Unknown", actions=("s3:GetObject",), resources=("arn:aws:s3:::{bucket}",)),
        lambda: PolicyStatement(sid="LambdarunObjects", actions=("s3:GetObject",), resources=("arn:aws:s3:::other/*",)),
    ],
    ids=["star", "service-star", "any-resource", "any-arn", "no-resource", "no-sid", "attribute", "conversion", "unknown", "core-sid"],
)
def test_wide_or_malformed_statements_are_refused(aws_session, boto, built, unique_name, make):
    table = unique_name("items")

    class Plugin(Contributes):
        @hookimpl
        def lambdarun_deploy_resources(self, settings: Any, register: DeployResources) -> None:
            register.add_table(TableResource(self.table, keys=(KeyAttribute("id"),)))
            register.add_statement(make())

    session = aws_session(Plugin(table))
    with pytest.raises(ContributionError):
        deploy(session, package=built)
    _nothing_created(boto, session, table)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TableResource("x", keys=(KeyAttribute("id"),)),  # too short a name
        lambda: TableResource("bad name!", keys=(KeyAttribute("id"),)),
        lambda: TableResource("no-key-table", keys=()),
        lambda: TableResource("range-only", keys=(KeyAttribute("sk", key_type="RANGE"),)),
        lambda: TableResource("two-hashes", keys=(KeyAttribute("a"), KeyAttribute("b"))),
        lambda: TableResource("odd-type", keys=(KeyAttribute("id", "M"),)),
        lambda: TableResource("wide-table", keys=(KeyAttribute("id"),), actions=("dynamodb:*",)),
        lambda: TableResource("not-dynamo", keys=(KeyAttribute("id"),), actions=("s3:GetObject",)),
    ],
    ids=["short", "chars", "no-key", "range-only", "two-hashes", "type", "star", "other-service"],
)
def test_malformed_tables_are_refused(make):
    with pytest.raises(ContributionError):
        make()


def test_the_same_table_twice_must_have_the_same_key():
    register = DeployResources()
    register.add_table(TableResource("shared", keys=(KeyAttribute("pk"),)))
    register.add_table(TableResource("shared", keys=(KeyAttribute("pk"),)))  # the same: fine, once
    assert len(register.tables) == 1
    with pytest.raises(ContributionError, match="declared twice"):
        register.add_table(TableResource("shared", keys=(KeyAttribute("id", "N"),)))
    with pytest.raises(ContributionError):
        register.add_table({"TableName": "raw"})  # type: ignore[arg-type]
    register.add_environment("EXAMPLE", "1")
    with pytest.raises(ContributionError, match="twice"):
        register.add_environment("EXAMPLE", "2")
    register.add_statement(PolicyStatement(sid="One", actions=("sqs:SendMessage",), resources=("arn:aws:sqs:us-east-1:1:q",)))
    with pytest.raises(ContributionError, match="unique"):
        register.add_statement(PolicyStatement(sid="One", actions=("sqs:ReceiveMessage",), resources=("arn:aws:sqs:us-east-1:1:q",)))


def test_a_configured_table_nobody_declares_is_refused(aws_session, boto, built, unique_name):
    """``[deploy] table`` without the plugin owning its schema: deploy cannot guess the key."""
    table = unique_name("orphan")
    session = aws_session(deploy={"table": table})
    with pytest.raises(ContributionError, match="no installed plugin declares"):
        deploy(session, package=built)
    _nothing_created(boto, session, table)


def test_contributions_show_in_the_dry_run(aws_session, built, unique_name):
    table = unique_name("items")
    session = aws_session(Contributes(table))
    spec = session_spec(session)
    assert [t.name for t in spec.tables] == [table]
    plan = deploy(session, dry_run=True, package=built)
    assert f"create  table                   {table}  (example items (id), on demand)" in plan.render()
