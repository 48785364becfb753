"""MemorySize is the environment's memory limit, as on AWS: past it the environment is killed
and the invocation fails with ``Runtime.OutOfMemory``; REPORT's Max Memory Used is measured.

AWS docs: "Troubleshoot invocation issues in Lambda" (Runtime.OutOfMemory, "Runtime exited with
error: signal: killed"), https://docs.aws.amazon.com/lambda/latest/dg/troubleshooting-invocation.html;
"Monitoring: REPORT line" (Max Memory Used), https://docs.aws.amazon.com/lambda/latest/dg/python-logging.html.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

ALLOCATE = """
import json, os, subprocess, sys, time

def vmhwm_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

def handler(event, context):
    block = b"x" * (event["mb"] * 1024 * 1024)
    with open(event["marker"], "w") as f:  # only reached when the allocation survived
        f.write(str(len(block)))
    return {"pid": os.getpid(), "vmhwm_mb": vmhwm_mb()}
"""


def invoke(lam: Any, name: str, event: dict[str, Any]) -> tuple[dict[str, Any], Any, str]:
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event), LogType="Tail")
    return r, json.loads(r["Payload"].read()), base64.b64decode(r["LogResult"]).decode()


def report_field(log: str, field: str) -> str | None:
    m = re.search(rf"REPORT RequestId: .*\t{field}: ([^\t]+)\t", log)
    return m.group(1) if m else None


@pytest.mark.timeout(60)
def test_allocation_past_memory_size_is_out_of_memory(lam: Any, make_function: Any, tmp_path: Path) -> None:
    name = make_function(ALLOCATE, memory_size=128, timeout=30)
    r, first, _ = invoke(lam, name, {"mb": 1, "marker": str(tmp_path / "small")})
    assert "FunctionError" not in r
    marker = tmp_path / "big"
    r, doc, log = invoke(lam, name, {"mb": 400, "marker": str(marker)})
    request_id = r["ResponseMetadata"]["RequestId"]
    # AWS: an Unhandled error, the runtime killed
    assert r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled"
    assert doc == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
    }
    assert not marker.exists()  # killed in the allocation, nothing after it ran
    assert f"RequestId: {request_id} Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory\n" in log
    assert "\tStatus: error\tError Type: Runtime.OutOfMemory\t" in log
    assert int(report_field(log, "Max Memory Used").split()[0]) > 128
    # the environment was replaced: the next call works, in a new process
    r, after, _ = invoke(lam, name, {"mb": 1, "marker": str(tmp_path / "after")})
    assert "FunctionError" not in r and after["pid"] != first["pid"]


@pytest.mark.timeout(60)
def test_max_memory_used_is_the_measured_peak(lam: Any, make_function: Any, tmp_path: Path) -> None:
    name = make_function(ALLOCATE, memory_size=256, timeout=30)
    for mb in (80, 10):  # the peak stays the environment's peak, as on AWS
        r, doc, log = invoke(lam, name, {"mb": mb, "marker": str(tmp_path / f"m{mb}")})
        assert "FunctionError" not in r
        used = int(report_field(log, "Max Memory Used").split()[0])
        assert report_field(log, "Memory Size") == "256 MB"
        # the handler's own high-water mark (in MB, rounded up in REPORT) is what REPORT
        # shows, within the kernel's approximation of another process's RSS counters (per-CPU
        # counters read without summing exactly: a fraction of a MB seen here)
        assert doc["vmhwm_mb"] >= 80
        assert doc["vmhwm_mb"] - 2 <= used <= doc["vmhwm_mb"] + 4, (used, doc)


@pytest.mark.timeout(60)
def test_memory_of_a_daemonized_child_counts(lam: Any, make_function: Any, tmp_path: Path) -> None:
    """A child that double-forks and calls setsid() to leave the runtime's tree still counts
    against the environment's memory (it is re-parented to the supervisor)."""
    marker = tmp_path / "daemon-survived"
    name = make_function(f"""
        import os, time
        def handler(event, context):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    block = b"x" * (300 * 1024 * 1024)
                    time.sleep(3)
                    open({str(marker)!r}, "w").write(str(len(block)))
                os._exit(0)
            os.wait()
            time.sleep(10)
            return "survived"
    """, memory_size=128, timeout=30)
    r = lam.invoke(FunctionName=name, Payload=b"{}")
    doc = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled" and doc["errorType"] == "Runtime.OutOfMemory"
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_memory_during_init_is_out_of_memory(lam: Any, make_function: Any, tmp_path: Path) -> None:
    name = make_function("""
        BLOCK = b"x" * (300 * 1024 * 1024)
        def handler(event, context):
            return len(BLOCK)
    """, memory_size=128, timeout=30)
    r = lam.invoke(FunctionName=name, Payload=b"{}")
    doc = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled"
    assert doc["errorType"] == "Runtime.OutOfMemory"
    assert doc["errorMessage"].endswith("Error: Runtime exited with error: signal: killed")


def test_the_function_does_not_see_its_memory_watchdog_settings(lam: Any, make_function: Any) -> None:
    """The supervisor takes its limit and file from the environment before it forks the
    runtime: the handler sees AWS's variables only (AWS_LAMBDA_FUNCTION_MEMORY_SIZE)."""
    name = make_function("""
        import os
        def handler(event, context):
            return {k: v for k, v in os.environ.items() if "MEMORY" in k or k.startswith("_LAMBDARUN_LOCAL_M")}
    """, memory_size=256)
    r = lam.invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(r["Payload"].read()) == {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"}
