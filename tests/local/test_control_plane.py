"""The Lambda control plane of the local service, driven through boto3 only."""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local.testing import make_zip

pytestmark = pytest.mark.timeout(60)

ECHO = """
def handler(event, context):
    return {"event": event, "version": 1}
"""


def test_create_get_list_delete(lam: Any, make_function: Any) -> None:
    name = make_function(ECHO, timeout=7, memory_size=256, environment={"AA": "1"})
    cfg = lam.get_function(FunctionName=name)["Configuration"]
    assert cfg["FunctionName"] == name
    assert cfg["FunctionArn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    assert (cfg["Timeout"], cfg["MemorySize"], cfg["Handler"]) == (7, 256, "app.handler")
    assert cfg["Environment"]["Variables"] == {"AA": "1"}
    assert cfg["State"] == "Active"
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    names = [f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]]
    assert name in names
    # by ARN, too
    assert lam.get_function_configuration(FunctionName=cfg["FunctionArn"])["FunctionName"] == name
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.get_function(FunctionName=name)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_duplicate_create_is_a_conflict(lam: Any, make_function: Any) -> None:
    name = make_function(ECHO)
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": ECHO})})


def test_update_code_and_configuration(lam: Any, make_function: Any) -> None:
    name = make_function(ECHO)
    first = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
    assert first["version"] == 1
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": ECHO.replace("1}", "2}")}))
    second = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
    assert second["version"] == 2
    cfg = lam.update_function_configuration(
        FunctionName=name, Timeout=9, MemorySize=512, Environment={"Variables": {"BB": "2"}}
    )
    assert (cfg["Timeout"], cfg["MemorySize"], cfg["Environment"]["Variables"]) == (9, 512, {"BB": "2"})


def test_local_directory_code(lam: Any, tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text("def handler(event, context):\n    return 'from-dir'\n")
    name = "dir-function"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="mod.handler",
                        Code={"S3Bucket": "__local__", "S3Key": str(tmp_path)})
    try:
        assert lam.invoke(FunctionName=name)["Payload"].read() == b'"from-dir"'
        # Code.Location downloads a zip of the directory (as AWS's URL downloads the package)
        loc = lam.get_function(FunctionName=name)["Code"]["Location"]
        with urllib.request.urlopen(loc, timeout=10) as r:  # noqa: S310 - the loopback service
            assert zipfile.ZipFile(io.BytesIO(r.read())).namelist() == ["mod.py"]
    finally:
        lam.delete_function(FunctionName=name)
    assert (tmp_path / "mod.py").exists()  # code used in place is never deleted


def test_code_from_local_s3(lam: Any, local_stack: Any) -> None:
    s3 = local_stack.client("s3")
    s3.create_bucket(Bucket="code-bucket")
    s3.put_object(Bucket="code-bucket", Key="f.zip", Body=make_zip({"app.py": ECHO}))
    lam.create_function(FunctionName="s3-code", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler",
                        Code={"S3Bucket": "code-bucket", "S3Key": "f.zip"})
    try:
        out = json.loads(lam.invoke(FunctionName="s3-code", Payload=b'{"x": 1}')["Payload"].read())
        assert out == {"event": {"x": 1}, "version": 1}
    finally:
        lam.delete_function(FunctionName="s3-code")


def test_concurrency_settings(lam: Any, make_function: Any) -> None:
    name = make_function(ECHO)
    assert lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)[
        "ReservedConcurrentExecutions"] == 2
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 2
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 2}
    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)


def test_unknown_function_is_404(lam: Any) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.invoke(FunctionName="does-not-exist", Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "does-not-exist" in err.value.response["Error"]["Message"]


def test_bad_values_are_rejected(lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(FunctionName="bad-timeout", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r",
                            Handler="app.handler", Timeout=901, Code={"ZipFile": make_zip({"app.py": ECHO})})
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(FunctionName="bad-dir", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler",
                            Code={"S3Bucket": "__local__", "S3Key": "relative/dir"})


def test_layers_are_refused(lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.create_function(FunctionName="with-layers", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler",
                            Layers=["arn:aws:lambda:us-east-1:123456789012:layer:deps:1"],
                            Code={"ZipFile": make_zip({"app.py": ECHO})})
    assert "install the layer's packages" in err.value.response["Error"]["Message"]
