"""Zip functions see only their own code plus what Lambda's Python runtime provides."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from lambdarun.local.testing import make_zip


def _task_root(extension: Any, name: str) -> str:
    """The function's LAMBDA_TASK_ROOT, from lambdarun's extension API."""
    (fn,) = [f for f in extension("/_lambdarun/functions")["functions"] if f["name"] == name]
    return fn["task_root"]

pytestmark = pytest.mark.timeout(60)

IMPORTS = """
import importlib, sys

def handler(event, context):
    out = {}
    for name in event["modules"]:
        try:
            mod = importlib.import_module(name)
            out[name] = getattr(mod, "__file__", None) or "builtin"
        except ImportError as e:
            out[name] = f"ImportError: {e}"
    return {"imports": out, "sys_path": sys.path, "flags": {"isolated": sys.flags.isolated,
            "no_site": sys.flags.no_site}}
"""


def invoke(lam: Any, name: str, event: Any) -> tuple[dict[str, Any], Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    return resp, json.loads(resp["Payload"].read())


def test_zip_function_cannot_import_the_services_packages(lam: Any, make_function: Any, extension: Any) -> None:
    name = make_function(IMPORTS)
    modules = ["attrs", "lambdarun", "structlog", "boto3", "botocore", "awslambdaric", "dateutil",
               "jmespath", "s3transfer", "urllib3", "six", "json", "sqlite3", "aws_durable_execution_sdk_python"]
    resp, out = invoke(lam, name, {"modules": modules})
    assert "FunctionError" not in resp, out
    imports = out["imports"]
    for missing in ("attrs", "lambdarun", "structlog"):
        assert imports[missing].startswith("ImportError"), (missing, imports[missing])
    for present in ("boto3", "botocore", "awslambdaric", "dateutil", "jmespath", "s3transfer",
                    "urllib3", "six", "json", "sqlite3", "aws_durable_execution_sdk_python"):
        assert not imports[present].startswith("ImportError"), (present, imports[present])
    assert out["flags"] == {"isolated": 1, "no_site": 1}
    # the task root first, then the runtime's packages, then only the standard library
    task_root = _task_root(extension, name)
    assert out["sys_path"][0] == task_root
    assert os.path.basename(out["sys_path"][1]) == "runtime"
    assert imports["boto3"].startswith(out["sys_path"][1] + os.sep)
    assert not any("site-packages" in p for p in out["sys_path"])


def test_boto3_works_inside_a_zip_function(lam: Any, make_function: Any, local_stack: Any) -> None:
    source = """
    import boto3

    def handler(event, context):
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=event["bucket"])
        s3.put_object(Bucket=event["bucket"], Key="k", Body=b"v")
        return s3.get_object(Bucket=event["bucket"], Key="k")["Body"].read().decode()
    """
    name = make_function(source, timeout=30)
    resp, out = invoke(lam, name, {"bucket": "sandbox-boto3"})
    assert "FunctionError" not in resp, out
    assert out == "v"


def test_a_zip_importing_an_unvendored_package_fails_at_init(lam: Any, make_function: Any) -> None:
    name = make_function("import attrs\n\ndef handler(event, context):\n    return 1\n")
    resp, out = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.ImportModuleError"
    assert "attrs" in out["errorMessage"]


def test_a_vendored_package_in_the_zip_imports(lam: Any, make_function: Any) -> None:
    name = make_function({
        "app.py": "import vendored\n\ndef handler(event, context):\n    return vendored.VALUE\n",
        "vendored/__init__.py": "VALUE = 42\n",
    })
    resp, out = invoke(lam, name, {})
    assert "FunctionError" not in resp, out
    assert out == 42


def test_pythonpath_of_the_function_is_honoured(lam: Any, make_function: Any, extension: Any) -> None:
    files = {
        "app.py": "import extra\n\ndef handler(event, context):\n    return extra.VALUE\n",
        "lib/extra.py": "VALUE = 'from PYTHONPATH'\n",
    }
    name = make_function(files)
    task_root = _task_root(extension, name)
    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"PYTHONPATH": os.path.join(task_root, "lib")}}
    )
    resp, out = invoke(lam, name, {})
    assert "FunctionError" not in resp, out
    assert out == "from PYTHONPATH"


def test_local_directory_functions_keep_the_services_packages(lam: Any, tmp_path: Any) -> None:
    (tmp_path / "app.py").write_text(IMPORTS)
    name = "sandbox-local-dir"
    lam.create_function(
        FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
        Handler="app.handler", Code={"S3Bucket": "__local__", "S3Key": str(tmp_path)},
    )
    try:
        resp, out = invoke(lam, name, {"modules": ["attrs", "lambdarun"]})
        assert "FunctionError" not in resp, out
        assert not out["imports"]["attrs"].startswith("ImportError")
        assert not out["imports"]["lambdarun"].startswith("ImportError")
        assert out["flags"]["isolated"] == 0
    finally:
        lam.delete_function(FunctionName=name)


def test_updating_a_directory_function_to_a_zip_isolates_it(lam: Any, tmp_path: Any) -> None:
    (tmp_path / "app.py").write_text(IMPORTS)
    name = "sandbox-updated"
    lam.create_function(
        FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
        Handler="app.handler", Code={"S3Bucket": "__local__", "S3Key": str(tmp_path)},
    )
    try:
        resp, out = invoke(lam, name, {"modules": ["attrs"]})
        assert not out["imports"]["attrs"].startswith("ImportError")
        lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": IMPORTS}))
        resp, out = invoke(lam, name, {"modules": ["attrs"]})
        assert "FunctionError" not in resp, out
        assert out["imports"]["attrs"].startswith("ImportError")
    finally:
        lam.delete_function(FunctionName=name)
