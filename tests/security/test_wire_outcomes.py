"""Outcomes are verified before anything is unpickled, by the caller process.

A real covalent task runs asynchronously on the local stack (its outcome is polled from
storage) and waits for a gate file; meanwhile the test writes a forged "outcome" under
the task's own prefix, as anyone with write access to the bucket could. Each forgery
carries a pickle that creates a marker file when loaded: the caller must refuse it with a
typed error and the marker must not appear.
"""

from __future__ import annotations

import os
import sys
import time

import cloudpickle
import pytest

import lambdarun
from lambdarun.errors import EnvelopeExpiredError, EnvelopeSignatureError, OutcomeMismatchError
from lambdarun.testing.waiting import wait_for as wait_for_condition
from lambdarun.testing.wire import FOREIGN_KEY, forge, marker_pickle

pytest.importorskip("lambdarun_covalent")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

FUNCTION = "lambdarun-wire-outcomes"
#: a bucket of its own: nothing here can disturb other suites' storage checks
BUCKET = "lambdarun-wire-outcomes"


def wait_for(path, seconds):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "real result"


@pytest.fixture(scope="module", autouse=True)
def no_watch_left(local_stack):
    """After these tests, before the stack may stop: the stopped attempts' late outcomes are
    watched for a few seconds more (JANITOR_GRACE); wait for that to end, so no watcher is
    left polling a stopped stack (it would give up with a warning at the end of the run)."""
    from lambdarun_covalent.engine import live_engines

    yield
    wait_for_condition(lambda: not any(engine.watching() for engine in live_engines()),
                       "the covalent engines to stop watching", timeout=60)


@pytest.fixture
def session(lambdarun_session, local_stack):
    s3 = local_stack.client("s3")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return lambdarun_session(
        overrides={
            "target": "local",
            "local": {"state_dir": str(local_stack.state_dir)},
            "storage_url": f"s3://{BUCKET}/lambdarun",
            "progress": False,
            "covalent": {"function_name": FUNCTION, "mode": "async", "timeout": 60},
        },
        load_entrypoints=True,
    )


def outcome(key, *, task_id, attempt, marker, issued=None):
    meta = {"ok": True, "stdout": "", "stderr": "", "task_id": task_id, "attempt": attempt}
    return forge("outcome", [("cloudpickle", marker_pickle(marker))], meta, key=key, issued=issued)


FORGERIES = {
    "unsigned": (lambda s, task, m: outcome(None, task_id=task, attempt=1, marker=m), EnvelopeSignatureError),
    "foreign key": (lambda s, task, m: outcome(FOREIGN_KEY, task_id=task, attempt=1, marker=m), EnvelopeSignatureError),
    "another task": (lambda s, task, m: outcome(s.signing_key, task_id="another-task", attempt=1, marker=m), OutcomeMismatchError),
    "another attempt": (lambda s, task, m: outcome(s.signing_key, task_id=task, attempt=2, marker=m), OutcomeMismatchError),
    "expired": (
        lambda s, task, m: outcome(s.signing_key, task_id=task, attempt=1, marker=m, issued=time.time() - 7200),
        EnvelopeExpiredError,
    ),
}


@pytest.mark.parametrize("kind", list(FORGERIES))
def test_forged_outcome_in_storage_is_refused_before_unpickling(session, tmp_path, kind):
    make, error = FORGERIES[kind]
    gate, marker = tmp_path / "gate", tmp_path / "marker"
    future = lambdarun.submit(wait_for, str(gate), 60, backend="covalent", session=session)
    try:
        task = future.info["task"]
        deadline = time.monotonic() + 30
        while not (task.attempt and task.attempt.invoked) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert task.attempt and task.attempt.invoked
        backend = session.backend("covalent")
        backend.storage.put(task.attempt.outcome_key, make(session, task.id, marker))
        with pytest.raises(error):
            future.result(timeout=30)
        assert not marker.exists()
        # nothing is left behind: the refused object is deleted, the real attempt stopped and
        # any late outcome of it cleaned up
        deadline = time.monotonic() + 30
        while backend.storage.list(backend.run_prefix) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.storage.list(backend.run_prefix) == []
    finally:
        gate.write_text("go")  # let the real task end (where the target could not stop it)


def test_control_the_real_outcome_is_accepted(session, tmp_path):
    gate = tmp_path / "gate"
    gate.write_text("go")
    assert lambdarun.run(wait_for, str(gate), 5, backend="covalent", session=session) == "real result"
