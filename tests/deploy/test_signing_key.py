"""`lambdarun deploy` and the envelope signing key: a secret per function (created when
missing, never overwritten unless --rotate-key), readable by that function's role only,
named (never contained) in the function's environment, and removed by destroy only when
deploy created it."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from lambdarun.deploy import deploy, destroy
from lambdarun.deploy.errors import DeployError
from lambdarun.deploy.plan import MANAGED_TAG
from lambdarun.deploy.plugin import DeployContext, lambdarun_add_commands
from lambdarun.deploy.policy import POLICY_NAME
from lambdarun.signing import key_id


def _secret_actions(result):
    actions = result.applied if hasattr(result, "applied") else result.actions
    return [(a.change.value, a.name) for a in actions if a.kind == "secret"]


def _key(boto, secret):
    return boto("secretsmanager").get_secret_value(SecretId=secret)["SecretString"]


def test_deploy_creates_the_key_secret_and_grants_only_it(aws_session, boto, built):
    session = aws_session()
    fn = session.settings.function_name
    secret = f"lambdarun/{fn}/signing-key"
    result = deploy(session, package=built)
    assert _secret_actions(result) == [("create", secret)]

    key = _key(boto, secret)
    assert len(key.encode()) >= 32
    desc = boto("secretsmanager").describe_secret(SecretId=secret)
    assert {t["Key"]: t["Value"] for t in desc["Tags"]}[MANAGED_TAG] == "lambdarun-deploy"

    variables = boto("lambda").get_function_configuration(FunctionName=fn)["Environment"]["Variables"]
    assert variables["LAMBDARUN_SIGNING_KEY_SECRET"] == secret
    assert variables["LAMBDARUN_SIGNING_KEY_ID"] == key_id(key.encode())
    assert "LAMBDARUN_SIGNING_KEY" not in variables
    assert not any(key in value for value in variables.values())

    doc = boto("iam").get_role_policy(RoleName=f"{fn}-role", PolicyName=POLICY_NAME)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    grants = [s for s in doc["Statement"] if "secretsmanager" in json.dumps(s["Action"])]
    assert grants == [{
        "Sid": "LambdarunSigningKey",
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret}-??????",
    }]

    # a second deploy keeps the key; destroy removes the secret deploy created
    again = deploy(session, package=built)
    assert not again.changed and _key(boto, secret) == key
    gone = destroy(session)
    assert ("delete", secret) in _secret_actions(gone)
    with pytest.raises(boto("secretsmanager").exceptions.ResourceNotFoundException):
        boto("secretsmanager").describe_secret(SecretId=secret)


def test_rotate_key_replaces_the_key_and_recycles_environments(aws_session, boto, built):
    session = aws_session()
    fn = session.settings.function_name
    secret = f"lambdarun/{fn}/signing-key"
    deploy(session, package=built)
    old = _key(boto, secret)

    rotated = deploy(session, package=built, rotate_key=True)
    new = _key(boto, secret)
    assert new != old and len(new.encode()) >= 32
    kinds = [(a.change.value, a.kind) for a in rotated.applied]
    assert kinds == [("update", "secret"), ("update", "function-configuration")]
    variables = boto("lambda").get_function_configuration(FunctionName=fn)["Environment"]["Variables"]
    assert variables["LAMBDARUN_SIGNING_KEY_ID"] == key_id(new.encode())
    destroy(session)


def test_a_configured_key_is_stored_but_an_existing_one_is_never_overwritten(aws_session, boto, built):
    session = aws_session()
    fn = session.settings.function_name
    secret = f"lambdarun/{fn}/signing-key"
    mine = "deploy-test-configured-key-0123456789abcdef"
    deploy(session.derive({"signing_key": mine}), package=built)
    assert _key(boto, secret) == mine
    variables = boto("lambda").get_function_configuration(FunctionName=fn)["Environment"]["Variables"]
    assert not any(mine in value for value in variables.values())

    other = "deploy-test-another-configured-key-01234567"
    with pytest.raises(DeployError, match="holds another key than the configured signing_key.*--rotate-key"):
        deploy(session.derive({"signing_key": other}), package=built)
    assert _key(boto, secret) == mine
    deploy(session.derive({"signing_key": other}), package=built, rotate_key=True)
    assert _key(boto, secret) == other
    destroy(session)


def test_a_secret_deploy_did_not_create_is_used_and_kept(aws_session, boto, built, unique_name):
    name = unique_name("users-secret")
    value = "users-own-signing-key-0123456789abcdefghijk"
    boto("secretsmanager").create_secret(Name=name, SecretString=value)
    session = aws_session(signing_key_secret=name)
    fn = session.settings.function_name
    result = deploy(session, package=built)
    assert _secret_actions(result) == []  # no-op: used as is
    assert boto("lambda").get_function_configuration(FunctionName=fn)["Environment"]["Variables"][
        "LAMBDARUN_SIGNING_KEY_SECRET"
    ] == name
    with pytest.raises(DeployError, match="was not created by lambdarun deploy: rotate its value yourself"):
        deploy(session, package=built, rotate_key=True)
    destroy(session)
    assert _key(boto, name) == value


def test_cli_rotate_key(aws_session, boto, built):
    session = aws_session()
    secret = f"lambdarun/{session.settings.function_name}/signing-key"
    deploy(session, package=built)
    cli = click.Group("lambdarun")
    lambdarun_add_commands(cli)
    context = DeployContext(make_session=lambda overrides: session.derive(dict(overrides)))
    out = CliRunner().invoke(cli, ["deploy", "--target", "aws", "--rotate-key", "--dry-run"], obj=context)
    assert out.exit_code == 0, out.output
    assert "update  secret" in out.output and "new signing key (--rotate-key)" in out.output
    destroy(session)
    assert not boto("secretsmanager").list_secrets(Filters=[{"Key": "name", "Values": [secret]}])["SecretList"]
