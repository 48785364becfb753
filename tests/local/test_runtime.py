"""A function runs on the interpreter its ``Runtime`` names, or is refused at create
(``InvalidParameterValueException``, as AWS refuses a runtime it will not run:
https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local.testing import make_zip

pytestmark = pytest.mark.timeout(120)

ROLE = "arn:aws:iam::123456789012:role/lambdarun-test"
APP = """
import os, sys
def handler(event, context):
    return {"version": "%d.%d" % sys.version_info[:2], "exec_env": os.environ["AWS_EXECUTION_ENV"],
            "executable": sys.executable}
"""
OWN = f"{sys.version_info.major}.{sys.version_info.minor}"


def _runs(executable: str, version: str) -> bool:
    """Independently of the service: can ``executable`` run awslambdaric as Python ``version``?"""
    try:
        out = subprocess.run([executable, "-I", "-c", "import sys, awslambdaric; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, timeout=30, check=False)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.decode().strip() == version


def _installed(version: str) -> list[str]:
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = [str(Path(d) / f"python{version}") for d in dirs if d]
    found += [str(p / "bin" / f"python{version}") for p in pyenv.glob(f"{version}.*")] if pyenv.is_dir() else []
    return [f for f in found if Path(f).is_file() and _runs(f, version)]


def _create(lam: Any, name: str, runtime: str) -> Any:
    return lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler="app.handler",
                               Code={"ZipFile": make_zip({"app.py": APP})})


def test_the_services_own_python(lam: Any) -> None:
    _create(lam, "runtime-own", f"python{OWN}")
    try:
        out = json.loads(lam.invoke(FunctionName="runtime-own")["Payload"].read())
        assert out["version"] == OWN and out["exec_env"] == f"AWS_Lambda_python{OWN}"
    finally:
        lam.delete_function(FunctionName="runtime-own")


@pytest.mark.parametrize("version", [v for v in ("3.10", "3.12", "3.13") if v != OWN])
def test_other_pythons_run_when_installed_else_are_refused(lam: Any, version: str) -> None:
    """What this machine has decides the outcome; both outcomes are asserted."""
    name = f"runtime-{version.replace('.', '-')}"
    if _installed(version):
        _create(lam, name, f"python{version}")
        try:
            out = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
            assert out["version"] == version and out["exec_env"] == f"AWS_Lambda_python{version}"
        finally:
            lam.delete_function(FunctionName=name)
    else:
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
            _create(lam, name, f"python{version}")
        message = err.value.response["Error"]["Message"]
        assert f"cannot run Runtime python{version}" in message and "pip install awslambdaric" in message
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function(FunctionName=name)


def test_a_runtime_nobody_has_is_refused_and_an_update_to_it_too(lam: Any, make_function: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        _create(lam, "runtime-future", "python3.15")
    assert "cannot run Runtime python3.15" in err.value.response["Error"]["Message"]
    name = make_function(APP)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=name, Runtime="python3.15")
    cfg = lam.get_function_configuration(FunctionName=name)
    assert cfg["Runtime"] == f"python{OWN}"
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read())["version"] == OWN


def test_non_python_runtimes_are_refused(lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        _create(lam, "runtime-node", "nodejs20.x")
    assert "Python 3 functions only" in err.value.response["Error"]["Message"]


def test_a_restored_function_whose_interpreter_is_gone_is_kept(tmp_path: Path) -> None:
    """A persisting stack restarted where a function's Runtime can no longer run (the
    service's Python upgraded, say) keeps the function, on the service's interpreter."""
    from lambdarun.local import LocalStack

    def start() -> LocalStack:
        return LocalStack(tmp_path / "state", reuse=False, shared=True, stop_at_exit=False).start()

    stack = start()
    try:
        _create(stack.client("lambda"), "kept-runtime", f"python{OWN}")
        saved = stack.run_dir / "state" / "functions.json"  # type: ignore[operator]
    finally:
        stack.stop()
    doc = json.loads(saved.read_text())
    doc["functions"][0]["runtime"] = "python3.15"
    saved.write_text(json.dumps(doc))
    stack = start()
    try:
        lam = stack.client("lambda")
        assert lam.get_function_configuration(FunctionName="kept-runtime")["Runtime"] == "python3.15"
        assert json.loads(lam.invoke(FunctionName="kept-runtime")["Payload"].read())["version"] == OWN
    finally:
        stack.stop()
