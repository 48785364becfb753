"""``[local] out_of_process = true``: the embedded stack runs in a child process that hands
its credentials over privately and dies with the caller, even a SIGKILLed one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CALLER = textwrap.dedent('''
    import json, os, sys, time
    import lambdarun
    from lambdarun.session import Session

    def worker_pid():
        return os.getpid()

    session = Session(overrides={"target": "local", "backend": "covalent", "progress": False,
                                 "local": {"state_dir": sys.argv[1], "out_of_process": True}})
    stack = session.target.stack
    worker = lambdarun.run(worker_pid, session=session)
    assert sorted(lambdarun.map(abs, range(-20, 0), session=session)) == list(range(1, 21))
    print(json.dumps({"caller": os.getpid(), "stack": stack.pid, "worker": worker,
                      "owned": stack.owned, "secret": stack.credentials.secret_access_key,
                      "key": stack.signing_key.decode()}), flush=True)
    if sys.argv[2] == "wait":
        time.sleep(600)
    session.close()
''')


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def start_caller(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, dict]:
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    caller = subprocess.Popen([sys.executable, str(script), str(tmp_path / "state"), mode],
                              stdout=subprocess.PIPE, env=env, text=True)
    line = caller.stdout.readline()
    assert line, f"the caller exited with {caller.wait()} before reporting"
    return caller, json.loads(line)


@pytest.mark.timeout(300)
def test_the_stack_runs_in_a_child_that_dies_with_a_sigkilled_caller(tmp_path):
    caller, info = start_caller(tmp_path, "wait")
    try:
        assert info["stack"] not in (info["caller"], 0) and info["owned"] is False
        assert info["worker"] not in (info["caller"], info["stack"])
        # the stack's secrets were handed over on a pipe: not on its command line, not in its environment
        for what in ("cmdline", "environ"):
            data = Path(f"/proc/{info['stack']}/{what}").read_bytes()
            assert info["secret"].encode() not in data and info["key"].encode() not in data
        assert not gone(info["stack"]) and not gone(info["worker"])
        caller.send_signal(signal.SIGKILL)
        caller.wait(timeout=30)
        wait_until(lambda: gone(info["stack"]), 60, "the child stack to exit after its caller was killed")
        wait_until(lambda: gone(info["worker"]), 60, "the stack's execution environment to exit")
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
        for pid in (info.get("stack"), info.get("worker")):
            if pid and not gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(300)
def test_a_caller_that_exits_normally_stops_its_child_stack(tmp_path):
    caller, info = start_caller(tmp_path, "exit")
    assert caller.wait(timeout=120) == 0
    wait_until(lambda: gone(info["stack"]), 60, "the child stack to exit with its caller")
    wait_until(lambda: gone(info["worker"]), 60, "the stack's execution environment to exit")
    assert not any((tmp_path / "state").glob("embedded-*"))  # its run folder went with it
