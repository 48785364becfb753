"""Chaos on the real local target: a second driver as another process
(``lambdarun durable resume ARN``) while the first one drives, and resume on finished
executions. The steps run inside the local Lambda service's workers and append to a
side-effect file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_durable.plugin
from lambdarun.local.testing import local_stack_fixture, make_local_session
from lambdarun_durable import DurableContext, StepContext, durable_execution
from lambdarun_durable.backend import DurableExecutionFailed
from lambdarun_durable.config import StepConfig, StepSemantics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

local_stack = local_stack_fixture(scope="module")

FUNCTION = "lambdarun-durable-chaos"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/durable.db"


@pytest.fixture
def session(lambdarun_session: Callable[..., Any], local_stack: Any, store_url: str) -> Any:
    # the CLI drives executions as the in-process orchestrator (leases)
    return make_local_session(
        lambdarun_session, local_stack, [lambdarun_durable.plugin],
        durable={"function_name": FUNCTION, "store_url": store_url, "api": "orchestrator"},
    )


def cli(local_stack: Any, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    """``python -m lambdarun.cli durable ...`` in another process, on the same stack and store."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO), *(str(REPO / "plugins" / p) for p in ("covalent", "temporal", "durable")), *sys.path]
        ),
        "LAMBDARUN_TARGET": "local",
        "LAMBDARUN_LOCAL__STATE_DIR": str(local_stack.state_dir),
        "LAMBDARUN_PROGRESS": "false",
        "LAMBDARUN_DURABLE__FUNCTION_NAME": FUNCTION,
        "LAMBDARUN_DURABLE__API": "orchestrator",
    }
    return subprocess.run(
        [sys.executable, "-m", "lambdarun.cli", "durable", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


AT_MOST_ONCE = StepConfig(step_semantics=StepSemantics.AT_MOST_ONCE_PER_RETRY)


@durable_execution
def ledger(event: dict, ctx: DurableContext) -> int:
    import os as _os
    import time as _time

    def post(sctx: StepContext, i: int) -> int:
        with open(event["log"], "a") as f:
            f.write(f"start {i} {sctx.attempt} {_os.getpid()}\n")
        _time.sleep(event["pause"])
        gate = event.get("gate")
        deadline = _time.monotonic() + 120
        while gate and i == 0 and not _os.path.exists(gate) and _time.monotonic() < deadline:
            _time.sleep(0.02)  # the first step stays running until the test has seen the refusal
        with open(event["log"], "a") as f:
            f.write(f"done {i} {sctx.attempt} {_os.getpid()}\n")
        return i

    return sum(ctx.step(lambda s, i=i: post(s, i), name=f"post-{i}", config=AT_MOST_ONCE) for i in range(event["steps"]))


@durable_execution
def refuses(event: dict, ctx: DurableContext) -> None:
    raise ValueError("card declined")


def effects(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def test_cli_resume_while_the_first_driver_is_alive(session: Any, local_stack: Any, store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    steps = 8
    gate = tmp_path / "gate"  # the first driver is still running until the test opens it
    future = lambdarun.submit(
        ledger, {"log": str(log), "steps": steps, "pause": 0.4, "gate": str(gate)}, backend="durable", session=session
    )
    arn = future.task_id
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(e[0] == "start" for e in effects(log)):
        time.sleep(0.02)
    assert any(e[0] == "start" for e in effects(log)), "the first driver never started a step"

    # a second driver that does not wait exits at once with the typed error naming the holder
    refused = cli(local_stack, "resume", arn, "--store-url", store_url)
    assert refused.returncode != 0
    assert "LeaseHeldError" in refused.stderr, refused.stderr
    assert f"/{os.getpid()}/" in refused.stderr and "since" in refused.stderr
    assert not future.done()
    gate.touch()

    # one that waits gets the lease when the first driver is done and prints the result
    waited = cli(local_stack, "resume", arn, "--store-url", store_url, "--wait", "120")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout) == sum(range(steps))
    assert future.result(timeout=60) == sum(range(steps))

    backend = session.backend("durable")
    assert backend.service.describe(arn)["Status"] == "SUCCEEDED"
    lines = effects(log)
    done = Counter(int(e[1]) for e in lines if e[0] == "done")
    starts = Counter((e[1], e[2]) for e in lines if e[0] == "start")
    assert done == Counter(range(steps)), done  # each side effect exactly once
    assert max(starts.values()) == 1
    assert os.getpid() not in {int(e[3]) for e in lines}  # the steps ran in Lambda workers


def test_resume_on_finished_executions(session: Any, local_stack: Any, store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    backend = session.backend("durable")
    assert lambdarun.run(ledger, {"log": str(log), "steps": 2, "pause": 0}, backend="durable", session=session) == 1
    (ok,) = [e["DurableExecutionArn"] for e in backend.service.list_executions(status="SUCCEEDED")]
    with pytest.raises(DurableExecutionFailed):
        lambdarun.run(refuses, {}, backend="durable", session=session)
    (failed,) = [e["DurableExecutionArn"] for e in backend.service.list_executions(status="FAILED")]
    before = len(effects(log))

    # in process: the result, or the execution's error, as run gave them
    assert backend.resume(ok).result(timeout=30) == 1
    with pytest.raises(DurableExecutionFailed) as info:
        backend.resume(failed).result(timeout=30)
    assert info.value.error["ErrorMessage"] == "card declined" and info.value.arn == failed

    # from the command line, in another process
    out = cli(local_stack, "resume", ok, "--store-url", store_url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == 1
    out = cli(local_stack, "resume", failed, "--store-url", store_url)
    assert out.returncode != 0 and "card declined" in out.stderr and "ConfigError" not in out.stderr
    assert len(effects(log)) == before  # nothing ran again
    assert backend.service.describe(failed)["Status"] == "FAILED"


def test_cli_resume_refuses_bad_lease_settings(monkeypatch: pytest.MonkeyPatch, store_url: str) -> None:
    from click.testing import CliRunner

    from lambdarun_durable.cli import durable as durable_cli

    monkeypatch.setenv("LAMBDARUN_DURABLE__LEASE_HEARTBEAT", "20")  # more than lease_ttl / 3
    out = CliRunner().invoke(durable_cli, ["resume", "arn:x", "--store-url", store_url])
    assert out.exit_code != 0 and "ConfigError" in out.output and "lease_ttl" in out.output
    monkeypatch.delenv("LAMBDARUN_DURABLE__LEASE_HEARTBEAT")
    out = CliRunner().invoke(durable_cli, ["resume", "arn:x", "--store-url", store_url, "--wait", "-1"])
    assert out.exit_code == 2 and "--wait" in out.output
