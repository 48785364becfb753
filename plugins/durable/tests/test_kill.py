"""SIGKILL an invocation mid-execution; the execution completes on re-invocation and no
at-most-once step attempt runs twice (a killed attempt is retried as a new attempt)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lambdarun_durable.execution import DurableInvocationInput
from lambdarun_durable.orchestrator import Orchestrator
from lambdarun_durable.service import DurableService
from lambdarun_durable.stores import SQLiteCheckpointStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import killable_handler  # noqa: E402


@pytest.mark.timeout(60)
def test_sigkill_mid_execution_then_complete(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    log_path = tmp_path / "side-effects.log"
    store = SQLiteCheckpointStore(str(db))
    service = DurableService(store)
    arn = service.start_execution("fn", json.dumps({"pause": 0.2}))
    event, _ = service.invocation_event(arn)
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))

    env = {**os.environ, "_LAMBDARUN_DURABLE_TEST_LOG": str(log_path), "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen([sys.executable, str(HERE / "killable_handler.py"), str(event_file)], env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # kill while step 4 is running
            lines = log_path.read_text().splitlines() if log_path.exists() else []
            if any(line.startswith("start 4 ") for line in lines):
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    killed_pid = proc.pid
    killable_handler.LOG = str(log_path)  # the re-invocations below log to the same file

    def invoke(name: str, ev: dict[str, Any]) -> dict[str, Any]:
        inv = DurableInvocationInput.from_event(ev)
        return killable_handler.handler(inv, None)

    result = Orchestrator(service, invoke).run("fn", arn)
    assert result == {"Status": "SUCCEEDED", "Result": str(sum(range(killable_handler.STEPS)))}

    lines = [line.split() for line in log_path.read_text().splitlines()]
    starts = Counter((step, attempt) for kind, step, attempt, _ in lines if kind == "start")
    dones = Counter(step for kind, step, _, _ in lines if kind == "done")
    assert max(starts.values()) == 1, "an at-most-once attempt ran twice"
    assert all(dones[str(i)] == 1 for i in range(killable_handler.STEPS)), dones
    # step 4 was interrupted in the killed process and retried as attempt 2 afterwards
    assert ("4", "1") in starts and ("4", "2") in starts
    assert [l for l in lines if l[0] == "done" and l[1] == "4"][0][3] != str(killed_pid)
    # steps that finished before the kill were not run again
    assert all(starts[(str(i), "2")] == 0 for i in range(4))
    store.close()
