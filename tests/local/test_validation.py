"""What AWS validates before an operation runs, through boto3 only (with botocore's own
client-side validation off, so requests reach the service as written).

* The service model's constraints (min/max/pattern/enum of botocore's Lambda model) answer 400
  ``ValidationException`` "1 validation error detected: Value '...' at 'member' failed to
  satisfy constraint: ..." (https://docs.aws.amazon.com/lambda/latest/api/CommonErrors.html).
* Lambda's semantic checks: reserved environment keys and the 4 KB limit
  (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html), deprecated runtimes
  (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html): InvalidParameterValueException.
* GetAccountSettings (https://docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lambdarun.local.testing import make_zip

pytestmark = pytest.mark.timeout(60)

ROLE = "arn:aws:iam::123456789012:role/lambdarun-test"
ENV_APP = """
import os, sys
def handler(event, context):
    return {k: os.environ.get(k) for k in ("LANG", "AWS_REGION", "_HANDLER")} | {"fsenc": sys.getfilesystemencoding()}
"""
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _error(err: Any) -> tuple[int, str, str]:
    e = err.value.response
    return e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"], e["Error"]["Message"]


def _create(lam: Any, name: str, **overrides: Any) -> Any:
    kwargs = {"FunctionName": name, "Runtime": RUNTIME, "Role": ROLE, "Handler": "app.handler",
              "Code": {"ZipFile": make_zip({"app.py": ENV_APP})}, **overrides}
    return lam.create_function(**kwargs)


def _refused(lam: Any, **overrides: Any) -> tuple[int, str, str]:
    name = overrides.pop("FunctionName", "validation-target")
    with pytest.raises(ClientError) as err:
        _create(lam, name, **overrides)
    names = [f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]]
    assert name not in names  # nothing was created
    return _error(err)


@pytest.mark.parametrize("overrides, member, constraint", [
    ({"FunctionName": "bad name!"}, "functionName", "Member must satisfy regular expression pattern"),
    ({"FunctionName": "x" * 65}, "functionName", "Member must have length less than or equal to 64"),
    ({"Timeout": 0}, "timeout", "Member must have value greater than or equal to 1"),
    ({"MemorySize": 64}, "memorySize", "Member must have value greater than or equal to 128"),
    ({"MemorySize": 40000}, "memorySize", "Member must have value less than or equal to 32768"),
    ({"Role": "not-a-role"}, "role", "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::"),
    ({"Runtime": "cobol85"}, "runtime", "Member must satisfy enum value set: [nodejs,"),
    ({"Description": "d" * 257}, "description", "Member must have length less than or equal to 256"),
    ({"Handler": "has space"}, "handler", "Member must satisfy regular expression pattern"),
    ({"Environment": {"Variables": {"1BAD": "x"}}}, "environment.variables", "Map keys must satisfy constraint"),
])
def test_model_constraints_are_validation_exceptions(lam_unchecked: Any, overrides: dict[str, Any],
                                                     member: str, constraint: str) -> None:
    status, code, message = _refused(lam_unchecked, **overrides)
    assert (status, code) == (400, "ValidationException"), message
    assert message.startswith("1 validation error detected: Value '")
    assert f"' at '{member}' failed to satisfy constraint: {constraint}" in message


def test_several_violations_are_counted(lam_unchecked: Any) -> None:
    status, code, message = _refused(lam_unchecked, Timeout=0, MemorySize=1)
    assert (status, code) == (400, "ValidationException")
    assert message.startswith("2 validation errors detected: ") and "; Value '" in message


def test_reserved_keys_the_model_already_refuses(lam: Any) -> None:
    """``_HANDLER`` breaks EnvironmentVariableName's pattern: the model's check comes first."""
    status, code, message = _refused(lam, Environment={"Variables": {"_HANDLER": "x"}})
    assert (status, code) == (400, "ValidationException") and "at 'environment.variables'" in message


@pytest.mark.parametrize("key", ["AWS_REGION", "AWS_LAMBDA_FUNCTION_NAME", "AWS_ACCESS_KEY_ID",
                                 "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "AWS_SESSION_TOKEN"])
def test_reserved_environment_keys_are_refused(lam: Any, make_function: Any, key: str) -> None:
    status, code, message = _refused(lam, Environment={"Variables": {key: "overridden", "OK_KEY": "1"}})
    assert (status, code) == (400, "InvalidParameterValueException")
    assert message == ("Lambda was unable to configure your environment variables because the environment "
                       "variables you have provided contains reserved keys that are currently not supported "
                       f"for modification. Reserved keys used in this request: {key}")
    # on update too, and the function keeps its runtime's values
    name = make_function(ENV_APP)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": {key: "overridden"}})
    out = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    assert out["AWS_REGION"] == "us-east-1" and out["_HANDLER"] == "app.handler"


def test_environment_over_4_kb_is_refused(lam: Any) -> None:
    big = {"BIG_VALUE": "x" * 4100}
    status, code, message = _refused(lam, Environment={"Variables": big})
    assert (status, code) == (400, "InvalidParameterValueException")
    assert message.startswith("Lambda was unable to configure your environment variables because the "
                              "environment variables you have provided exceeded the 4KB limit. String measured: ")
    # just under the limit is accepted
    fits = {"BIG_VALUE": "x" * (4096 - len('{"BIG_VALUE":""}'))}
    _create(lam, "env-fits", Environment={"Variables": fits})
    lam.delete_function(FunctionName="env-fits")


def test_deprecated_runtime_is_refused(lam: Any) -> None:
    status, code, message = _refused(lam, Runtime="python2.7")
    assert (status, code) == (400, "InvalidParameterValueException")
    assert message.startswith("The runtime parameter of python2.7 is no longer supported for creating or "
                              "updating AWS Lambda functions. We recommend you use the new runtime (")


def test_invoke_validation(lam_unchecked: Any, make_function: Any) -> None:
    name = make_function(ENV_APP)
    with pytest.raises(ClientError) as err:
        lam_unchecked.invoke(FunctionName="bad name!", Payload=b"{}")
    assert _error(err)[:2] == (400, "ValidationException")  # not 404: the name is malformed
    with pytest.raises(ClientError) as err:
        lam_unchecked.invoke(FunctionName=name, InvocationType="Sometimes", Payload=b"{}")
    status, code, message = _error(err)
    assert (status, code) == (400, "ValidationException")
    assert message == ("1 validation error detected: Value 'Sometimes' at 'invocationType' failed to satisfy "
                       "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]")


def test_functions_get_lambdas_lang(lam: Any, make_function: Any) -> None:
    """Lambda's Python runtimes set LANG=en_US.UTF-8 (not the service's own C.UTF-8)."""
    out = json.loads(lam.invoke(FunctionName=make_function(ENV_APP))["Payload"].read())
    assert out["LANG"] == "en_US.UTF-8" and out["fsenc"] == "utf-8"


def test_account_settings_are_the_local_limits(local_stack: Any, lam: Any, make_function: Any) -> None:
    name = make_function(ENV_APP)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    got = lam.get_account_settings()
    limit = got["AccountLimit"]
    assert limit["ConcurrentExecutions"] == 8  # the session stack's max_concurrency (conftest)
    assert limit["UnreservedConcurrentExecutions"] <= 6
    assert (limit["CodeSizeUnzipped"], limit["CodeSizeZipped"], limit["TotalCodeSize"]) == (
        262_144_000, 52_428_800, 80_530_636_800)
    usage = got["AccountUsage"]
    assert usage["FunctionCount"] >= 1 and usage["TotalCodeSize"] > 0


def test_local_directory_functions_are_exempt_from_the_4_kb_limit_only(lam: Any, tmp_path: Any) -> None:
    """The ``local`` target's functions carry this machine's import paths in PYTHONPATH."""
    (tmp_path / "app.py").write_text(ENV_APP)
    big = {"PYTHONPATH": "/x" * 3000}
    lam.create_function(FunctionName="env-local-dir", Runtime=RUNTIME, Role=ROLE, Handler="app.handler",
                        Code={"S3Bucket": "__local__", "S3Key": str(tmp_path)}, Environment={"Variables": big})
    try:
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
            lam.update_function_configuration(FunctionName="env-local-dir",
                                              Environment={"Variables": {"AWS_REGION": "eu-west-1"}})
        assert "reserved keys" in _error(err)[2]
    finally:
        lam.delete_function(FunctionName="env-local-dir")
