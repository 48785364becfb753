"""Chaos while a worker invocation drains a queue: the Temporal server dies (SIGKILL), or
the connection between worker and server is cut.

* server: a dev server keeps its state in a SQLite file; the test kills it once the worker
  has run a few activities and restarts it on the same port and file (2 s later, or only
  after the invocation ended);
* link: the worker reaches the server through :class:`lambdarun.testing.FaultProxy`; the
  test cuts every connection (``drop_all``) mid-drain, twice.

Every activity body appends one line (workflow id, attempt) to an effects file; the
activity has ``start_to_close_timeout`` 4 s and retries without limit (200 ms, up to 1 s).

What must hold:

* the invocation ends before its Lambda deadline, with a clean summary or a typed error
  (the scenario process then ends with ``os._exit(0)``: a Lambda runtime never tears its
  interpreter down between invocations, and temporalio's core may hold an abandoned
  worker's threads at teardown);
* nothing is reported done that was not: the attempt the server records as completed for
  each workflow really ran its body (its effect line exists) and the result is right;
* at least once, never more than the retry policy allows: a workflow's body ran at most as
  many times as the attempts the server started (``completed_attempt``), i.e. once per
  attempt; an activity whose completion the server had stored before the kill is not run
  again after it returns.
"""

from __future__ import annotations

import collections
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdarun.testing import FaultProxy
from lambdarun_temporal.devserver import DevServer
from lambdarun_temporal.testing import activity_outcomes, set_current_version, start_workflows, with_client

#: chaos scenarios: each drains workflows through killed servers, workers and links
pytestmark = pytest.mark.slow

DEPLOYMENT = "lambdarun-temporal-tests"
BUILD_ID = "v1"
WORKFLOWS = 24
TIMEOUT = 20.0  # the worker invocation's Lambda timeout


def read_effects(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def check_invocation_ended_cleanly(out: dict[str, Any]) -> None:
    assert out["returncode"] == 0, out["stderr"][-3000:]
    assert out["remaining_ms_at_return"] > 0, out  # returned before its Lambda deadline
    if "result" in out:
        assert out["result"]["stop_reason"] in {"idle", "deadline", "worker_stopped"}, out["result"]
    else:  # a typed error of ours or temporalio's, never a crash
        assert "LambdarunError" in out["error_mro"] or out["error_type"] == "RPCError", out


#: how long fresh invocations keep draining: a workflow task that the cut-off worker held on
#: its sticky queue reaches other workers only after Temporal's sticky schedule-to-start
#: timeout (temporalio's default: 10 s), and a drain invocation that finds nothing to do ends
#: after its 1 s idle period, so a fixed few invocations could all end before that task moved
DRAIN_SECONDS = 60.0


def drain(start_handler: Any, env: dict[str, str], address: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Fresh invocations until every workflow completed (for at most DRAIN_SECONDS)."""
    outcomes = activity_outcomes(address, ids)
    deadline = time.monotonic() + DRAIN_SECONDS
    i = 0
    while not all(o["status"] == "COMPLETED" for o in outcomes.values()) and time.monotonic() < deadline:
        out = start_handler("chaos", TIMEOUT, {**env, "SCENARIO_INVOCATION": f"drain-{i}"}).result()
        check_invocation_ended_cleanly(out)
        outcomes = activity_outcomes(address, ids)
        i += 1
    return outcomes


def check_at_least_once(outcomes: dict[str, dict[str, Any]], effects: list[dict[str, Any]]) -> None:
    counts = collections.Counter(e["wid"] for e in effects)
    for wid, outcome in outcomes.items():
        assert outcome["status"] == "COMPLETED", (wid, outcome)
        index = int(wid.rsplit("-", 1)[1])
        assert outcome["result"] == index + 1, (wid, outcome)
        attempt = outcome["completed_attempt"]
        # the attempt reported done really ran its body
        assert any(e["wid"] == wid and e["attempt"] == attempt for e in effects), (wid, outcome)
        # one body run per attempt at most: never more runs than attempts started
        assert counts[wid] <= attempt, (wid, counts[wid], outcome)
        assert len({e["attempt"] for e in effects if e["wid"] == wid}) == counts[wid], wid


@pytest.fixture
def crashable_server(tmp_path: Path) -> Iterator[DevServer]:
    server = DevServer(db_filename=str(tmp_path / "temporal.db"))
    server.start()
    try:
        with_client(server.address, lambda client: set_current_version(client, DEPLOYMENT, BUILD_ID))
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(240)
def test_server_killed_mid_drain(crashable_server, task_queue, start_handler, tmp_path):
    address = crashable_server.address
    effects_file = tmp_path / f"effects-{uuid.uuid4().hex[:6]}.jsonl"
    ids = start_workflows(address, task_queue, "Effect", range(WORKFLOWS))
    env = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue,
           "SCENARIO_EFFECTS": str(effects_file), "SCENARIO_ACTIVITY_SECONDS": "1"}
    run = start_handler("chaos", TIMEOUT, {**env, "SCENARIO_INVOCATION": "first"})
    wait_until(lambda: len(read_effects(effects_file)) >= 4, 60, "4 activities to run")
    crashable_server.kill()
    before_kill = read_effects(effects_file)
    time.sleep(2.0)  # the outage
    crashable_server.start()

    first = run.result()
    check_invocation_ended_cleanly(first)

    outcomes = drain(start_handler, env, address, ids)
    effects = read_effects(effects_file)
    check_at_least_once(outcomes, effects)
    # completions the server had stored before it died are final: those bodies never ran again
    stored = [e for e in before_kill if outcomes[e["wid"]]["completed_attempt"] == e["attempt"]]
    assert stored, "no completion survived the kill: the test did not test durability"
    for e in stored:
        assert [x for x in effects if x["wid"] == e["wid"]] == [e], e["wid"]


@pytest.mark.timeout(240)
def test_server_down_until_the_deadline(crashable_server, task_queue, start_handler, tmp_path):
    """The server does not come back during the invocation: the worker cannot learn the
    backlog, so it never claims idle; it stops at its deadline (minus the shutdown buffer)
    and returns before the Lambda deadline. The next invocation finishes the work."""
    address = crashable_server.address
    effects_file = tmp_path / f"effects-{uuid.uuid4().hex[:6]}.jsonl"
    ids = start_workflows(address, task_queue, "Effect", range(WORKFLOWS))
    env = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue,
           "SCENARIO_EFFECTS": str(effects_file), "SCENARIO_ACTIVITY_SECONDS": "1"}
    run = start_handler("chaos", 10.0, {**env, "SCENARIO_INVOCATION": "first"})
    wait_until(lambda: len(read_effects(effects_file)) >= 4, 60, "4 activities to run")
    crashable_server.kill()
    before_kill = read_effects(effects_file)
    first = run.result()
    crashable_server.start()

    check_invocation_ended_cleanly(first)
    if "result" in first:
        assert first["result"]["stop_reason"] == "deadline", first["result"]
    outcomes = drain(start_handler, env, address, ids)
    effects = read_effects(effects_file)
    check_at_least_once(outcomes, effects)
    stored = [e for e in before_kill if outcomes[e["wid"]]["completed_attempt"] == e["attempt"]]
    assert stored, "no completion survived the kill: the test did not test durability"
    for e in stored:
        assert [x for x in effects if x["wid"] == e["wid"]] == [e], e["wid"]


@pytest.mark.timeout(240)
def test_connection_dropped_mid_drain(temporal_server, task_queue, start_handler, tmp_path):
    """Every worker<->server connection is cut twice while activities run: the worker
    reconnects (a new connection through the proxy) and finishes, or exits cleanly; either
    way before its deadline, and no body runs more than once per attempt."""
    effects_file = tmp_path / f"effects-{uuid.uuid4().hex[:6]}.jsonl"
    ids = start_workflows(temporal_server.address, task_queue, "Effect", range(WORKFLOWS))
    with FaultProxy(("127.0.0.1", temporal_server.port)) as proxy:
        env = {"TEMPORAL_ADDRESS": f"127.0.0.1:{proxy.port}", "TEMPORAL_TASK_QUEUE": task_queue,
               "SCENARIO_EFFECTS": str(effects_file), "SCENARIO_ACTIVITY_SECONDS": "1"}
        run = start_handler("chaos", TIMEOUT, {**env, "SCENARIO_INVOCATION": "first"})
        wait_until(lambda: len(read_effects(effects_file)) >= 4, 60, "4 activities to run")
        proxy.drop_all()
        wait_until(lambda: len(read_effects(effects_file)) >= 8 or run.proc.poll() is not None, 60,
                   "more activities after the first cut (or the invocation's end)")
        proxy.drop_all()
        first = run.result()
        check_invocation_ended_cleanly(first)
        assert proxy.drops >= 1
        outcomes = drain(start_handler, env, temporal_server.address, ids)
    effects = read_effects(effects_file)
    check_at_least_once(outcomes, effects)
