"""The Init phase as Lambda runs it on demand: limited to 10 s, then retried inside the first
invocation under the function's timeout.

AWS docs: "Understanding the Lambda execution environment lifecycle", Init phase ("The Init
phase is limited to 10 seconds. If all three tasks don't complete within 10 seconds, Lambda
retries the Init phase at the time of the first function invocation with the configured
function timeout.") and "Failures during the Init phase" (INIT_REPORT),
https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

SLOW_INIT = """
import os, time
with open({inits!r}, "a") as f:
    f.write(str(os.getpid()) + "\\n")
time.sleep(12)

def handler(event, context):
    open({ran!r}, "a").close()
    return {{"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}}
"""


def function_logs(local_stack: Any, name: str) -> str:
    return "".join(p.read_text() for p in sorted(Path(local_stack.state_dir).rglob(f"logs/{name}/*.log")))


@pytest.mark.timeout(120)
def test_init_over_10s_is_retried_in_the_first_invocation(lam: Any, make_function: Any, tmp_path: Path,
                                                          local_stack: Any) -> None:
    inits, ran = tmp_path / "inits", tmp_path / "ran"
    name = make_function(SLOW_INIT.format(inits=str(inits), ran=str(ran)), timeout=30)
    r = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    assert "FunctionError" not in r, r["Payload"].read()
    first = json.loads(r["Payload"].read())
    # Init ran twice: once in the Init phase (cut at 10 s), once inside the invocation
    assert len(inits.read_text().split()) == 2
    # the invocation's deadline counts from its start, which the re-init (12 s) used up
    assert first["remaining_ms"] <= 30_000 - 11_000
    tail = base64.b64decode(r["LogResult"]).decode()
    report = re.search(r"REPORT RequestId: [^\n]*", tail).group(0)
    assert float(re.search(r"\tDuration: ([\d.]+) ms", report).group(1)) >= 12_000
    assert "Init Duration" not in report  # the init is part of the invocation's duration
    assert "INIT_REPORT Init Duration: 10000.00 ms\tPhase: init\tStatus: timeout" in function_logs(local_stack, name)
    # later calls are warm: same environment, no init
    r = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    assert json.loads(r["Payload"].read())["pid"] == first["pid"]
    assert "Init Duration" not in base64.b64decode(r["LogResult"]).decode()
    assert len(inits.read_text().split()) == 2


@pytest.mark.timeout(120)
def test_init_over_10s_with_a_shorter_timeout_times_out(lam: Any, make_function: Any, tmp_path: Path,
                                                         local_stack: Any) -> None:
    inits, ran = tmp_path / "inits", tmp_path / "ran"
    name = make_function(SLOW_INIT.format(inits=str(inits), ran=str(ran)), timeout=5)
    r = lam.invoke(FunctionName=name, Payload=b"{}")
    request_id = r["ResponseMetadata"]["RequestId"]
    assert r["FunctionError"] == "Unhandled"
    assert json.loads(r["Payload"].read()) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 5.00 seconds",
    }
    assert not ran.exists()  # the handler never ran
    logs = function_logs(local_stack, name)
    assert "INIT_REPORT Init Duration: 10000.00 ms\tPhase: init\tStatus: timeout" in logs
    assert re.search(r"INIT_REPORT Init Duration: 5\d{3}\.\d\d ms\tPhase: invoke\tStatus: timeout", logs)
    assert re.search(rf"REPORT RequestId: {request_id}\tDuration: 5\d{{3}}\.\d\d ms\t[^\n]*Status: timeout", logs)
