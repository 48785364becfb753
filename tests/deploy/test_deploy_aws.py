"""deploy / update / no-op / destroy against moto's server (target ``aws`` with an endpoint URL)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdarun.deploy import (
    ApplyResult,
    Change,
    DeployPlan,
    FunctionNotManagedError,
    deploy,
    destroy,
    plan_deploy,
)
from lambdarun.deploy.plan import FUNCTION_TAG, MANAGED_TAG
from lambdarun.deploy.policy import POLICY_NAME, trust_policy

DURABLE = {"deploy": {"table": ""}}


def _kinds(result: ApplyResult | DeployPlan) -> list[tuple[str, str]]:
    actions = result.applied if isinstance(result, ApplyResult) else result.changes
    return [(a.change.value, a.kind) for a in actions]


def _exists(call: Any, *exceptions: str) -> bool:
    try:
        call()
        return True
    except Exception as exc:  # botocore ClientError subclasses
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in exceptions or type(exc).__name__ in exceptions:
            return False
        raise


def test_dry_run_plans_everything_and_creates_nothing(aws_session, boto, built, durable_tables):
    session = aws_session(durable_tables, deploy={"table": "lr-dry-table"})
    fn = session.settings.function_name
    plan = deploy(session, dry_run=True, package=built)
    assert isinstance(plan, DeployPlan)
    assert _kinds(plan) == [
        ("create", "bucket"),
        ("create", "table"),
        ("create", "secret"),
        ("create", "role"),
        ("create", "role-policy"),
        ("create", "function"),
    ]
    text = plan.render()
    assert fn in text and "create" in text and built.function.code_sha256 in text
    assert not _exists(lambda: boto("lambda").get_function(FunctionName=fn), "ResourceNotFoundException")
    assert not _exists(lambda: boto("iam").get_role(RoleName=f"{fn}-role"), "NoSuchEntity")
    assert not _exists(lambda: boto("dynamodb").describe_table(TableName="lr-dry-table"), "ResourceNotFoundException")


def test_deploy_update_noop_destroy(aws_session, boto, built, unique_name, durable_tables):
    table = unique_name("tbl")
    session = aws_session(durable_tables, deploy={"table": table})
    fn = session.settings.function_name
    bucket = session.settings.storage_url.split("/")[2]
    lam, iam, s3, ddb = boto("lambda"), boto("iam"), boto("s3"), boto("dynamodb")

    # 1. first deploy creates everything (the session's build: live edits of the source tree
    # by other work must not make the no-op check below see a "changed" package)
    result = deploy(session, package=built)
    assert _kinds(result) == [
        ("create", "bucket"),
        ("create", "table"),
        ("create", "secret"),
        ("create", "role"),
        ("create", "role-policy"),
        ("create", "function"),
    ]
    got = lam.get_function(FunctionName=fn)
    cfg = got["Configuration"]
    assert cfg["State"] == "Active"
    assert cfg["CodeSha256"] == built.function.code_sha256
    assert cfg["Handler"] == "lambdarun.runtime.handler"
    assert cfg["Runtime"] == "python3.11"
    assert cfg["Architectures"] == ["x86_64"]
    assert cfg["Role"].endswith(f":role/{fn}-role")
    env = cfg["Environment"]["Variables"]
    assert env["LAMBDARUN_TARGET"] == "aws"
    assert env["LAMBDARUN_STORAGE_URL"] == f"s3://{bucket}/lambdarun"
    assert got["Tags"][MANAGED_TAG] == "lambdarun-deploy" and got["Tags"][FUNCTION_TAG] == fn
    role = iam.get_role(RoleName=f"{fn}-role")["Role"]
    assert role["AssumeRolePolicyDocument"] == trust_policy()
    assert {t["Key"]: t["Value"] for t in role["Tags"]}[MANAGED_TAG] == "lambdarun-deploy"
    assert iam.list_role_policies(RoleName=f"{fn}-role")["PolicyNames"] == [POLICY_NAME]
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags[FUNCTION_TAG] == fn
    keys = ddb.describe_table(TableName=table)["Table"]["KeySchema"]
    assert keys == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]

    # 2. same inputs: nothing to do, and it says so
    again = deploy(session, package=built)
    assert isinstance(again, ApplyResult) and not again.changed
    assert "up to date: nothing to do" in again.render()
    assert all(a.change is Change.NOOP for a in again.plan.actions)
    assert "nothing to do" in again.plan.render()

    # 3. a configuration change updates only the configuration
    bigger = session.derive({"deploy": {"memory_size": 2048}})
    updated = deploy(bigger, package=built)
    assert _kinds(updated) == [("update", "function-configuration")]
    assert lam.get_function_configuration(FunctionName=fn)["MemorySize"] == 2048

    # 4. destroy --dry-run lists the deletions and deletes nothing
    preview = destroy(bigger, dry_run=True)
    assert isinstance(preview, DeployPlan) and ("delete", "function") in _kinds(preview)
    assert lam.get_function(FunctionName=fn)["Configuration"]["State"] == "Active"

    # 5. destroy removes exactly what deploy created
    gone = destroy(bigger)
    assert sorted(_kinds(gone)) == sorted(
        [("delete", "function"), ("delete", "secret"), ("delete", "role"), ("delete", "table"), ("delete", "bucket")]
    )
    assert not _exists(lambda: lam.get_function(FunctionName=fn), "ResourceNotFoundException")
    assert not _exists(lambda: iam.get_role(RoleName=f"{fn}-role"), "NoSuchEntity")
    assert not _exists(lambda: ddb.describe_table(TableName=table), "ResourceNotFoundException")
    assert not _exists(lambda: s3.head_bucket(Bucket=bucket), "404", "NoSuchBucket")
    # and a second destroy finds nothing
    assert not destroy(bigger).changed


def test_code_change_updates_code_only(aws_session, boto, tmp_path, built, cache_dir):
    from lambdarun.deploy import PackageSpec, build_package

    session = aws_session()
    fn = session.settings.function_name
    deploy(session, package=built)
    module = tmp_path / "my_tasks.py"
    module.write_text("def double(x):\n    return 2 * x\n")
    with_code = build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir, include=(module,)))
    assert with_code.function.code_sha256 != built.function.code_sha256
    result = deploy(session, package=with_code)
    assert _kinds(result) == [("update", "function-code")]
    sha = boto("lambda").get_function_configuration(FunctionName=fn)["CodeSha256"]
    assert sha == with_code.function.code_sha256
    assert not deploy(session, package=with_code).changed
    destroy(session)


def test_destroy_keeps_what_deploy_did_not_create(aws_session, boto, unique_name, built):
    bucket = unique_name("users-bucket")
    session = aws_session(storage_url=f"s3://{bucket}/lambdarun")
    fn = session.settings.function_name
    s3, iam, lam = boto("s3"), boto("iam"), boto("lambda")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="users/data.txt", Body=b"keep me")
    s3.put_object(Bucket=bucket, Key="lambdarun/scratch", Body=b"a run's leftover")
    iam.create_role(RoleName=f"{fn}-role", AssumeRolePolicyDocument=json.dumps(trust_policy()))

    result = deploy(session, package=built)
    assert _kinds(result) == [("create", "secret"), ("create", "function")]
    plan = result.plan
    assert any(a.kind == "role" and "used as is" in a.reason for a in plan.actions)

    gone = destroy(session)
    assert _kinds(gone) == [("delete", "function"), ("delete", "secret")]
    assert not _exists(lambda: lam.get_function(FunctionName=fn), "ResourceNotFoundException")
    assert iam.get_role(RoleName=f"{fn}-role")["Role"]["RoleName"] == f"{fn}-role"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["lambdarun/scratch", "users/data.txt"]


def test_existing_function_not_created_by_deploy_is_refused(aws_session, boto, built):
    session = aws_session()
    fn = session.settings.function_name
    iam = boto("iam")
    arn = iam.create_role(RoleName=f"{fn}-other", AssumeRolePolicyDocument=json.dumps(trust_policy()))["Role"]["Arn"]
    boto("lambda").create_function(
        FunctionName=fn, Runtime="python3.11", Role=arn, Handler="app.handler", Code={"ZipFile": built.function.read()}
    )
    with pytest.raises(FunctionNotManagedError, match="not created by lambdarun deploy"):
        plan_deploy(session, package=built)
    assert not _exists(lambda: iam.get_role(RoleName=f"{fn}-role"), "NoSuchEntity")


def test_large_zip_goes_through_s3_and_destroy_removes_it(aws_session, boto, built):
    limit = built.function.size - 1
    session = aws_session(deploy={"direct_upload_limit": limit})
    fn = session.settings.function_name
    bucket = session.settings.storage_url.split("/")[2]
    result = deploy(session, package=built)
    assert _kinds(result) == [
        ("create", "bucket"),
        ("create", "secret"),
        ("create", "role"),
        ("create", "role-policy"),
        ("create", "code-upload"),
        ("create", "function"),
    ]
    key = next(a for a in result.applied if a.kind == "code-upload").params["key"]
    assert key.startswith(f"lambdarun/deploy/{fn}/")
    assert boto("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] == built.function.size
    assert boto("lambda").get_function_configuration(FunctionName=fn)["CodeSha256"] == built.function.code_sha256
    assert not deploy(session, package=built).changed
    destroy(session)
    assert not _exists(lambda: boto("s3").head_bucket(Bucket=bucket), "404", "NoSuchBucket")


def test_layer_mode_publishes_dependencies_separately(aws_session, boto):
    session = aws_session()
    fn = session.settings.function_name
    result = deploy(session, layer=True)
    assert ("create", "layer") in _kinds(result)
    package = result.plan.package
    assert package.layer is not None
    names = set(__import__("zipfile").ZipFile(package.function.path).namelist())
    layer_names = set(__import__("zipfile").ZipFile(package.layer.path).namelist())
    assert "lambdarun/runtime.py" in names and not any(n.startswith("msgpack/") for n in names)
    assert "python/msgpack/__init__.py" in layer_names and not any(n.startswith("python/lambdarun/") for n in layer_names)
    cfg = boto("lambda").get_function_configuration(FunctionName=fn)
    assert [layer["Arn"] for layer in cfg["Layers"]] == [f"arn:aws:lambda:us-east-1:123456789012:layer:{fn}-deps:1"]
    assert not deploy(session, package=package).changed
    gone = destroy(session)
    assert ("delete", "layer") in _kinds(gone)
    assert boto("lambda").list_layer_versions(LayerName=f"{fn}-deps")["LayerVersions"] == []


def test_names_follow_the_default_backends_explicit_settings(aws_session):
    import lambdarun_covalent.plugin

    from lambdarun.deploy import resolve_spec

    session = aws_session(
        lambdarun_covalent.plugin,
        backend="covalent",
        function_name=None,
        covalent={"function_name": "covalent-awslambda-executor", "execution_role": "CovalentLambdaExecutionRole"},
        signing_key_secret="lambdarun/covalent-awslambda-executor/signing-key",
    )
    spec = resolve_spec(session.settings, session.target)
    assert spec.signing_secret == "lambdarun/covalent-awslambda-executor/signing-key"
    assert spec.environment["LAMBDARUN_SIGNING_KEY_SECRET"] == spec.signing_secret
    assert spec.function_name == "covalent-awslambda-executor"
    assert spec.role_name == "CovalentLambdaExecutionRole"
    assert spec.environment["LAMBDARUN_COVALENT__FUNCTION_NAME"] == "covalent-awslambda-executor"
    assert spec.environment["LAMBDARUN_BACKEND"] == "covalent"
    assert spec.notes == ()
    # --function wins, and the plan says what the backend would call instead
    other = resolve_spec(session.settings, session.target, function_name="other")
    assert other.function_name == "other"
    assert any("[covalent] function_name = 'other'" in note for note in other.notes)
    # no storage_url: the default bucket, and a note saying how callers find it
    bare = resolve_spec(session.settings.with_overrides({"storage_url": None}), session.target)
    assert bare.bucket == "lambdarun-123456789012-us-east-1"
    assert any("storage_url = 's3://lambdarun-123456789012-us-east-1/lambdarun'" in n for n in bare.notes)
    # no signing_key_secret: deploy's own secret, and a note saying how callers get the key
    keyless = resolve_spec(session.settings.with_overrides({"signing_key_secret": None}), session.target)
    assert keyless.signing_secret == "lambdarun/covalent-awslambda-executor/signing-key"
    assert any("signing_key_secret = 'lambdarun/covalent-awslambda-executor/signing-key'" in n for n in keyless.notes)


def test_the_registrys_default_backend_names_the_deployment_when_none_is_configured(aws_session):
    """No ``backend`` key: the session's resolved default (lambdarun-covalent registers itself
    as the default) is the backend whose section names the function and role."""
    import lambdarun_covalent.plugin

    from lambdarun.deploy.api import session_spec

    session = aws_session(
        lambdarun_covalent.plugin,
        function_name=None,
        covalent={"function_name": "covalent-awslambda-executor", "execution_role": "CovalentLambdaExecutionRole"},
    )
    assert session.settings.backend is None and session.default_backend_id == "covalent"
    spec = session_spec(session)
    assert spec.function_name == "covalent-awslambda-executor"
    assert spec.role_name == "CovalentLambdaExecutionRole"
    other = session_spec(session, function_name="other")
    assert any("the 'covalent' backend calls the function 'covalent-awslambda-executor'" in n for n in other.notes)
    # the durable backend chosen in the configuration: its section, not the registry's default
    import lambdarun_durable.plugin

    durable = aws_session(
        lambdarun_covalent.plugin, lambdarun_durable.plugin, backend="durable", function_name=None,
        covalent={"function_name": "covalent-awslambda-executor"}, durable={"function_name": "durable-fn"},
    )
    assert session_spec(durable).function_name == "durable-fn"


def test_durable_store_url_gives_the_table_and_notes_outside_buckets(aws_session, unique_name):
    import lambdarun_durable.plugin

    from lambdarun.deploy import session_spec

    table = unique_name("durable")
    session = aws_session(lambdarun_durable.plugin, durable={"store_url": f"dynamodb://{table}"})
    spec = session_spec(session)
    assert spec.table == table
    assert [k.name for k in spec.tables[0].keys] == ["pk", "sk"]  # the key schema comes from durable
    assert spec.environment["LAMBDARUN_DURABLE__STORE_URL"] == f"dynamodb://{table}"
    elsewhere = session.derive({"durable": {"store_url": "s3://another-bucket/durable"}})
    spec = session_spec(elsewhere)
    assert spec.table is None
    assert any("s3://another-bucket/durable (a backend setting) is outside" in note for note in spec.notes)
