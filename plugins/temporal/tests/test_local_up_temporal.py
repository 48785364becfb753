"""``lambdarun local up --with temporal``: the stack hosts the Temporal dev server with its
Serverless Worker controller; other tools (plain boto3, the ``temporal`` CLI, a plain
temporalio Client) use them from the printed ``export`` lines, and ``down`` stops both."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

import lambdarun
import lambdarun_temporal
from lambdarun_temporal.devserver import find_temporal_cli
from lambdarun_temporal.serverless_testing import APP_DIR, run_workflows, wait_routed


def _env() -> dict[str, str]:
    roots = [str(Path(lambdarun.__file__).resolve().parents[1]), str(Path(lambdarun_temporal.__file__).resolve().parents[1])]
    if os.environ.get("PYTHONPATH"):
        roots.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(roots)}


@pytest.fixture
def stack_with_temporal(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], Path]]:
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "lambdarun.local", "up", "--with", "temporal",
                             "--state-dir", str(state)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=_env())
    exports: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("export "):
            key, _, value = line[len("export "):].strip().partition("=")
            exports[key] = value
            if key == "TEMPORAL_NAMESPACE":
                break
    try:
        yield proc, exports, state
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=20)
        proc.stdout.close()


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.timeout(360)
def test_up_with_temporal_serves_serverless_workers(stack_with_temporal: Any) -> None:
    proc, exports, state = stack_with_temporal
    address = exports["TEMPORAL_ADDRESS"]
    assert address.startswith("127.0.0.1:")
    session = boto3.session.Session(aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    iam = session.client("iam", endpoint_url=exports["AWS_ENDPOINT_URL_IAM"])
    lam = session.client("lambda", endpoint_url=exports["AWS_ENDPOINT_URL_LAMBDA"])
    suffix = uuid.uuid4().hex[:8]
    external_id = uuid.uuid4().hex
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": external_id}}}]}
    role = iam.create_role(RoleName=f"invoke-{suffix}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    invocations = state.parent / "invocations.txt"
    arn = lam.create_function(
        FunctionName=f"sw-{suffix}", Runtime="python3.11", Handler="app.handler", Role=role, Timeout=30,
        Code={"S3Bucket": "__local__", "S3Key": str(APP_DIR)},
        Environment={"Variables": {"PYTHONPATH": _env()["PYTHONPATH"], "TEMPORAL_ADDRESS": address,
                                   "SW_DEPLOYMENT": f"d-{suffix}", "SW_BUILD_ID": "b1",
                                   "SW_TASK_QUEUE": f"q-{suffix}", "SW_INVOCATIONS": str(invocations)}},
    )["FunctionArn"]
    cli = find_temporal_cli()
    for args in (["worker", "deployment", "create", "--name", f"d-{suffix}"],
                 ["worker", "deployment", "create-version", "--deployment-name", f"d-{suffix}", "--build-id", "b1",
                  "--aws-lambda-function-arn", arn, "--aws-lambda-assume-role-arn", role,
                  "--aws-lambda-assume-role-external-id", external_id],
                 ["worker", "deployment", "set-current-version", "--deployment-name", f"d-{suffix}",
                  "--build-id", "b1", "--allow-no-pollers", "--ignore-missing-task-queues", "--yes"]):
        done = subprocess.run([cli, *args, "--address", address], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr + done.stdout
    asyncio.run(wait_routed(address, f"d-{suffix}", "b1", 120))
    _, results = asyncio.run(run_workflows(address, f"q-{suffix}", ["x", "y"], timeout=120))
    assert results == ["x@b1", "y@b1"]
    assert " start " in invocations.read_text()  # the server invoked the function

    down = subprocess.run([sys.executable, "-m", "lambdarun.local", "down", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert down.returncode == 0, down.stderr
    assert proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 20
    while _port_open(address):  # the dev server stopped with the stack
        assert time.monotonic() < deadline, "the Temporal dev server outlived the stack"
        time.sleep(0.1)


def test_up_with_an_unknown_companion_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "lambdarun.local", "up", "--with", "nope",
                           "--state-dir", str(tmp_path / "s")], capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode != 0
    assert "--with nope" in done.stderr and "temporal" in done.stderr
    assert not (tmp_path / "s" / "stack.json").exists()


def test_the_temporal_plugin_offers_its_companion() -> None:
    import lambdarun_temporal.plugin
    from lambdarun.plugins import make_plugin_manager
    from lambdarun_temporal.companion import start_temporal_companion

    pm = make_plugin_manager()
    if not pm.is_registered(lambdarun_temporal.plugin):
        pm.register(lambdarun_temporal.plugin)
    offered: dict[str, Any] = {}
    pm.hook.lambdarun_local_companions(register=offered)
    assert offered["temporal"] is start_temporal_companion
