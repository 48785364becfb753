"""deploy / no-op / update / destroy on the local target, and lambdarun.run through the
deployed zip."""

from __future__ import annotations

import os
import pytest

import lambdarun
from lambdarun.deploy import ApplyResult, UnsupportedOnTargetError, deploy, destroy


def _kinds(result: ApplyResult) -> list[tuple[str, str]]:
    return [(a.change.value, a.kind) for a in result.applied]


TASKS = """
import os


def where_things_come_from(x):
    import cloudpickle
    import msgpack

    import lambdarun

    return {
        "value": x * 2,
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "files": [lambdarun.__file__, msgpack.__file__, cloudpickle.__file__, __file__],
        "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
    }
"""


def not_in_the_zip(x):
    return x


def test_deploy_noop_update_destroy_on_the_local_target(local_session, local_stack, built):
    session = local_session()
    fn = session.settings.function_name
    lam = local_stack.client("lambda")

    first = deploy(session, package=built)
    assert _kinds(first) == [
        ("create", "bucket"), ("create", "secret"), ("create", "role"), ("create", "role-policy"), ("create", "function")
    ]
    cfg = lam.get_function(FunctionName=fn)["Configuration"]
    assert cfg["CodeSha256"] == built.function.code_sha256 and cfg["CodeSize"] == built.function.size

    assert not deploy(session, package=built).changed

    shorter = session.derive({"deploy": {"timeout": 60}})
    assert _kinds(deploy(shorter, package=built)) == [("update", "function-configuration")]
    assert lam.get_function_configuration(FunctionName=fn)["Timeout"] == 60

    gone = destroy(shorter)
    assert sorted(_kinds(gone)) == sorted(
        [("delete", "function"), ("delete", "secret"), ("delete", "role"), ("delete", "bucket")]
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=fn)


def test_layers_are_refused_on_the_local_target(local_session):
    with pytest.raises(UnsupportedOnTargetError, match="does not run Lambda layers"):
        deploy(local_session(), layer=True)


@pytest.mark.timeout(120)
def test_lambdarun_run_through_the_deployed_zip(
    local_session, local_stack, lambdarun_session, monkeypatch, tmp_path, unique_name
):
    session = local_session()
    fn = session.settings.function_name
    module_name = unique_name("deployed_tasks").replace("-", "_")
    module = tmp_path / f"{module_name}.py"
    module.write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks = __import__(module_name)
    result = deploy(session, include=[module])
    assert result.changed
    bucket_url = result.plan.spec.storage_url

    # a client session that uses the deployed function as it is (target "aws" on the local
    # stack's endpoints: nothing replaces the deployed code)
    import lambdarun_covalent.plugin

    endpoints = local_stack.endpoints
    # the local stack's own credentials (the only ones its endpoints accept), from a file
    # of their own as a user would configure them for the aws target
    creds = local_stack.credentials
    credentials_file = tmp_path / "stack-credentials"
    credentials_file.write_text(f"[local-stack]\naws_access_key_id = {creds.access_key_id}\n"
                                f"aws_secret_access_key = {creds.secret_access_key}\n")
    aws_credentials = {"profile": "local-stack", "credentials_file": str(credentials_file)}
    client = lambdarun_session(
        lambdarun_covalent.plugin,
        overrides={
            "target": "aws",
            "function_name": fn,
            "storage_url": bucket_url,
            "progress": False,
            # the key deploy generated, read from its secret (as the plan's note says)
            "signing_key_secret": result.plan.spec.signing_secret,
            "aws": {
                **aws_credentials,
                "lambda_endpoint_url": endpoints.lambda_,
                "s3_endpoint_url": endpoints.moto,
                "dynamodb_endpoint_url": endpoints.moto,
                "secretsmanager_endpoint_url": endpoints.moto,
            },
            "covalent": {"function_name": fn},
        },
    )
    out = lambdarun.run(tasks.where_things_come_from, 21, backend="covalent", session=client)
    assert out["value"] == 42 and out["function"] == fn
    # lambdarun and its dependencies were imported from the extracted zip
    assert all(path.startswith(out["task_root"] + os.sep) for path in out["files"]), out
    assert not out["files"][0].startswith(os.path.dirname(os.path.dirname(lambdarun.__file__)) + os.sep + "lambdarun")
    results = list(lambdarun.map(tasks.where_things_come_from, [1, 2, 3], backend="covalent", session=client))
    assert [r["value"] for r in results] == [2, 4, 6]
    # code that was not deployed is not there: the caller gets a clear error naming it
    with pytest.raises(lambdarun.errors.MissingModuleError, match="add it to the deployed requirements"):
        lambdarun.run(not_in_the_zip, 1, backend="covalent", session=client)
    destroy(session)
