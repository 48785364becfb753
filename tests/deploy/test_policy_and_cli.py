"""The execution role grants nothing beyond its resources; the CLI commands."""

from __future__ import annotations

import json
from typing import Any

import click
import pytest
from click.testing import CliRunner

from lambdarun.deploy.plugin import DeployContext, lambdarun_add_commands
from lambdarun.deploy.policy import POLICY_NAME, execution_policy

ALLOWED_ACTIONS = {
    "secretsmanager:GetSecretValue",
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "lambda:InvokeFunction",
    "s3:ListBucket",
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:TransactWriteItems",
    "dynamodb:TransactGetItems",
    "lambda:CheckpointDurableExecution",
    "lambda:GetDurableExecutionState",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def check_least_privilege(
    doc: dict[str, Any],
    *,
    fn: str,
    bucket: str,
    prefix: str,
    table: str | None,
    secret: str | None = None,
    self_destination: bool = True,
    durable_api: bool = False,
) -> None:
    account, region = "123456789012", "us-east-1"
    log_group = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{fn}"
    allowed_resources = {
        f"arn:aws:s3:::{bucket}/{prefix}/*": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"},
        f"arn:aws:s3:::{bucket}": {"s3:ListBucket"},
        f"{log_group}:*": {"logs:CreateLogGroup"},
        f"{log_group}:log-stream:*": {"logs:CreateLogStream", "logs:PutLogEvents"},
    }
    if self_destination:  # the covalent backend's async on-failure destination is the function itself
        allowed_resources[f"arn:aws:lambda:{region}:{account}:function:{fn}"] = {"lambda:InvokeFunction"}
    if durable_api:  # the durable plugin: its own executions' checkpoints, on itself only
        allowed_resources[f"arn:aws:lambda:{region}:{account}:function:{fn}:*"] = {
            "lambda:CheckpointDurableExecution", "lambda:GetDurableExecutionState"}
    if table:
        table_arn = f"arn:aws:dynamodb:{region}:{account}:table/{table}"
        dynamo = {a for a in ALLOWED_ACTIONS if a.startswith("dynamodb:")}
        allowed_resources[table_arn] = dynamo
        allowed_resources[f"{table_arn}/index/*"] = dynamo
    if secret:  # exactly the one secret holding the signing key (NAME + Secrets Manager's 6 characters)
        allowed_resources[f"arn:aws:secretsmanager:{region}:{account}:secret:{secret}-??????"] = {
            "secretsmanager:GetSecretValue"
        }
    seen_resources = set()
    for statement in doc["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}  # no NotAction/NotResource
        actions = set(_as_list(statement["Action"]))
        assert actions <= ALLOWED_ACTIONS, actions - ALLOWED_ACTIONS
        assert not any("*" in a for a in actions)
        for resource in _as_list(statement["Resource"]):
            assert resource in allowed_resources, resource
            assert actions <= allowed_resources[resource], (resource, actions)
            seen_resources.add(resource)
        if "s3:ListBucket" in actions:  # listing is limited to the lambdarun prefix
            assert statement["Condition"] == {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
        else:
            assert "Condition" not in statement
    assert seen_resources == set(allowed_resources)


def test_policy_document_grants_nothing_beyond_the_listed_resources():
    for table in (None, "lambdarun-durable"):
        doc = execution_policy(
            function_name="fn", region="us-east-1", account="123456789012", bucket="b", prefix="lambdarun", table=table
        )
        # no plugin contributed anything: not even lambda:InvokeFunction on the function itself
        check_least_privilege(doc, fn="fn", bucket="b", prefix="lambdarun", table=table, self_destination=False)
    doc = execution_policy(
        function_name="fn", region="us-east-1", account="123456789012", bucket="b", prefix="lambdarun", table=None,
        signing_secret="lambdarun/fn/signing-key",
    )
    check_least_privilege(
        doc, fn="fn", bucket="b", prefix="lambdarun", table=None, secret="lambdarun/fn/signing-key", self_destination=False
    )


def test_the_covalent_backend_contributes_only_invoking_the_function_itself():
    covalent = pytest.importorskip("lambdarun_covalent.deploy")
    doc = execution_policy(
        function_name="fn", region="us-east-1", account="123456789012", bucket="b", prefix="lambdarun",
        signing_secret="lambdarun/fn/signing-key", statements=[covalent.self_destination_statement()],
    )
    check_least_privilege(doc, fn="fn", bucket="b", prefix="lambdarun", table=None, secret="lambdarun/fn/signing-key")


def test_deployed_role_policy_is_least_privilege(aws_session, boto, unique_name, built, durable_tables):
    from lambdarun.deploy import deploy, destroy

    covalent = pytest.importorskip("lambdarun_covalent.deploy")
    table = unique_name("durable")
    session = aws_session(durable_tables, covalent, deploy={"table": table})
    fn = session.settings.function_name
    bucket = session.settings.storage_url.split("/")[2]
    deploy(session, package=built)
    doc = boto("iam").get_role_policy(RoleName=f"{fn}-role", PolicyName=POLICY_NAME)["PolicyDocument"]
    if isinstance(doc, str):
        doc = json.loads(doc)
    check_least_privilege(doc, fn=fn, bucket=bucket, prefix="lambdarun", table=table, secret=f"lambdarun/{fn}/signing-key",
                          durable_api=True)
    assert boto("iam").list_attached_role_policies(RoleName=f"{fn}-role")["AttachedPolicies"] == []
    destroy(session)


def test_cli_deploy_dry_run_deploy_noop_destroy(aws_session, boto):
    session = aws_session()
    fn = session.settings.function_name
    cli = click.Group("lambdarun")
    lambdarun_add_commands(cli)
    context = DeployContext(make_session=lambda overrides: session.derive(dict(overrides)))
    runner = CliRunner()

    dry = runner.invoke(cli, ["deploy", "--target", "aws", "--dry-run"], obj=context)
    assert dry.exit_code == 0, dry.output
    assert "create  function" in dry.output and "dry run: nothing was changed" in dry.output

    first = runner.invoke(cli, ["deploy", "--target", "aws"], obj=context)
    assert first.exit_code == 0, first.output
    assert f"created  function                {fn}" in first.output
    assert boto("lambda").get_function(FunctionName=fn)["Configuration"]["State"] == "Active"

    second = runner.invoke(cli, ["deploy", "--target", "aws"], obj=context)
    assert second.exit_code == 0, second.output
    assert "is up to date: nothing to do" in second.output

    gone = runner.invoke(cli, ["destroy", "--target", "aws"], obj=context)
    assert gone.exit_code == 0, gone.output
    assert "deleted  function" in gone.output and "deleted  role" in gone.output


def test_cli_reports_errors_as_click_errors(aws_session, boto, unique_name):
    bucket = unique_name("eu-cli")
    boto("s3", "eu-west-1").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    session = aws_session(storage_url=f"s3://{bucket}/lambdarun")
    cli = click.Group("lambdarun")
    lambdarun_add_commands(cli)
    result = CliRunner().invoke(cli, ["deploy"], obj=DeployContext(make_session=lambda o: session.derive(dict(o))))
    assert result.exit_code == 1
    assert "BucketRegionError" in result.output and "eu-west-1" in result.output


def test_cli_help_lists_the_options():
    cli = click.Group("lambdarun")
    lambdarun_add_commands(cli)
    out = CliRunner().invoke(cli, ["deploy", "--help"]).output
    for option in ("--target [aws|local]", "--function", "--requirements", "--dry-run", "--layer", "--include"):
        assert option in out
    assert "--dry-run" in CliRunner().invoke(cli, ["destroy", "--help"]).output
