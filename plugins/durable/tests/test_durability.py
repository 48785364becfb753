"""A step's result is committed before the step returns (AWS's SDK default); batching is opt-in.

A subprocess runs a handler whose second step ends the process with ``os._exit`` the moment
the first step has returned: nothing after that point (no flush, no atexit, no finally) runs.
The first step's result must be in the store all the same, and the re-invocation must not
run it again. With ``batching=True`` the same kill loses it (the documented trade).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lambdarun_durable.records import fold
from lambdarun_durable.serdes import deserialize
from lambdarun_durable.service import DurableService
from lambdarun_durable.stores import SQLiteCheckpointStore

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from lambdarun_durable import durable_execution
    from lambdarun_durable.execution import DurableInvocationInput

    marker = sys.argv[3]

    @durable_execution
    def handler(event, ctx):
        first = ctx.step(lambda _: {"paid": 42}, name="pay")
        with open(marker, "a") as f:
            f.write("pay returned\\n")
        os._exit(17)  # killed right after the step returned

    event = json.load(open(sys.argv[1]))
    inv = DurableInvocationInput.from_event(event)
    inv.batching = sys.argv[2] == "batched"
    handler(inv, None)
    """
)


def _run_killed(tmp_path: Path, mode: str) -> tuple[DurableService, str, Path]:
    db = tmp_path / f"{mode}.db"
    store = SQLiteCheckpointStore(str(db))
    service = DurableService(store)
    arn = service.start_execution("fn", json.dumps({}))
    event, _ = service.invocation_event(arn)
    (tmp_path / "event.json").write_text(json.dumps(event))
    (tmp_path / "child.py").write_text(CHILD)
    marker = tmp_path / f"{mode}.marker"
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "event.json"), mode, str(marker)],
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 17, proc.stderr
    assert marker.read_text() == "pay returned\n"
    return service, arn, db


@pytest.mark.timeout(90)
def test_step_result_is_committed_before_the_step_returns(tmp_path: Path) -> None:
    service, arn, db = _run_killed(tmp_path, "per-step")
    # a fresh store object (a new connection) reads what the killed process committed
    fresh = SQLiteCheckpointStore(str(db))
    ops = fold(fresh.load(arn).records)
    steps = [op for op in ops.values() if op["Type"] == "STEP"]
    assert len(steps) == 1
    assert steps[0]["Name"] == "pay"
    assert steps[0]["Status"] == "SUCCEEDED"
    assert deserialize(None, steps[0]["StepDetails"]["Result"], steps[0]["Id"], arn) == {"paid": 42}
    fresh.close()
    service.store.close()


@pytest.mark.timeout(90)
def test_batched_mode_loses_the_uncommitted_step_on_a_kill(tmp_path: Path) -> None:
    service, arn, db = _run_killed(tmp_path, "batched")
    fresh = SQLiteCheckpointStore(str(db))
    ops = fold(fresh.load(arn).records)
    assert [op for op in ops.values() if op["Type"] == "STEP"] == []
    fresh.close()
    service.store.close()


def test_per_step_mode_commits_once_per_step_and_batched_mode_once(tmp_path: Path) -> None:
    from lambdarun_durable import durable_execution
    from lambdarun_durable.testing import DurableFunctionTestRunner

    @durable_execution
    def handler(event: dict, ctx) -> int:
        return sum(ctx.step(lambda _, i=i: i, name=f"s{i}") for i in range(50))

    appends: dict[bool, int] = {}
    for batching in (False, True):
        with DurableFunctionTestRunner(handler, checkpoint_batching=batching) as runner:
            calls = 0
            real = runner.store.append

            def counting(*a, **kw):  # type: ignore[no-untyped-def]
                nonlocal calls
                calls += 1
                return real(*a, **kw)

            runner.store.append = counting  # type: ignore[method-assign]
            result = runner.run({})
            assert result.result_value == sum(range(50))
            appends[batching] = calls
    # per step: one append per step (START rides with SUCCEED) plus the end of the invocation
    assert appends[False] == 51
    assert appends[True] == 1
