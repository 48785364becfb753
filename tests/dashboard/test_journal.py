"""The run journal on a real SQLite file, with real LambdaFutures finished by hand."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lambdarun.dashboard import journal
from lambdarun.futures import LambdaFuture
from lambdarun.plugins import DEFAULT_PLUGINS


def _plugins() -> list[Any]:
    if "lambdarun.dashboard.plugin" in DEFAULT_PLUGINS:
        return []
    import lambdarun.dashboard.plugin

    return [lambdarun.dashboard.plugin]


@pytest.fixture
def session_for(lambdarun_session: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    def factory(target: str = "local", **dashboard: Any) -> Any:
        return lambdarun_session(
            *_plugins(),
            overrides={"target": target, "local": {"state_dir": str(tmp_path)}, "dashboard": dashboard},
        )

    return factory


def work(x: int) -> int:
    return x


def test_batch_and_task_outcomes(session_for: Callable[..., Any], tmp_path: Path) -> None:
    session = session_for()
    futures = [LambdaFuture(f"task-{i}") for i in range(4)]
    batch_id = journal.record_batch(session, "covalent", work, futures)
    assert batch_id is not None
    futures[0].info.update({"result_bytes": 17, "request_id": "req-0", "task": object()})
    futures[0].finish(0, stdout="x" * (journal.MAX_OUTPUT + 10), stderr="warn\n")
    try:
        raise KeyError("missing")
    except KeyError as exc:
        futures[1].finish(exception=exc, remote_traceback="Traceback (most recent call last):\nKeyError: 'missing'\n")
    assert futures[2].cancel()
    assert journal.flush()

    reader = journal.Journal(tmp_path / "journal.db")  # default: in the [local] state_dir
    (batch,) = reader.batches()
    assert (batch.id, batch.kind, batch.backend, batch.total) == (batch_id, "map", "covalent", 4)
    assert batch.function.endswith("test_journal.work")
    assert batch.counts == {"succeeded": 1, "failed": 1, "cancelled": 1, "pending": 1}
    assert batch.status == "running" and batch.done == 3
    ok, failed, cancelled, pending = reader.tasks(batch_id)
    assert ok.status == "succeeded" and ok.result_bytes == 17 and ok.stderr == "warn\n"
    assert ok.info == {"result_bytes": 17, "request_id": "req-0"}  # plain values only
    assert ok.stdout is not None and ok.stdout.startswith("[... 10 characters cut ...]")
    assert ok.elapsed_ms is not None and ok.elapsed_ms >= 0
    assert (failed.status, failed.error_type, failed.error_message) == ("failed", "KeyError", "'missing'")
    assert failed.traceback is not None and failed.traceback.endswith("KeyError: 'missing'\n")
    assert cancelled.status == "cancelled" and pending.status == "pending" and pending.finished is None
    assert [t.index for t in reader.tasks(batch_id, status="failed")] == [1]

    futures[3].finish(3)
    assert journal.flush()
    assert reader.batch(batch_id).status == "failed"  # a cancelled task counts against it
    reader.close()


def test_local_traceback_when_no_remote_one(session_for: Callable[..., Any], tmp_path: Path) -> None:
    session = session_for()
    future = LambdaFuture("t")
    batch_id = journal.record_batch(session, "covalent", work, [future], kind="run")
    future.finish(exception=concurrent.futures.TimeoutError("took too long"))
    journal.flush()
    (task,) = journal.Journal(tmp_path / "journal.db").tasks(batch_id)
    assert task.error_type == "TimeoutError" and "took too long" in (task.traceback or "")


def test_enabled_only_on_local_target_unless_configured(session_for: Callable[..., Any], tmp_path: Path) -> None:
    future = LambdaFuture("t")
    assert journal.record_batch(session_for("aws"), "covalent", work, [future]) is None
    assert journal.record_batch(session_for("local", journal="off"), "covalent", work, [future]) is None
    path = tmp_path / "elsewhere" / "j.db"
    assert journal.record_batch(session_for("aws", journal="on", journal_path=str(path)), "covalent", work, [future])
    journal.flush()
    assert len(journal.Journal(path).batches()) == 1
    assert journal.Journal(tmp_path / "none.db").batches() == []  # nothing recorded yet: empty


def test_old_batches_are_dropped(session_for: Callable[..., Any], tmp_path: Path) -> None:
    path = tmp_path / "keep.db"
    session = session_for(journal_path=str(path), journal_keep=3)
    ids = []
    for _ in range(5):
        future = LambdaFuture("t")
        ids.append(journal.record_batch(session, "covalent", work, [future]))
        future.finish(1)
        journal.flush()
    reader = journal.Journal(path)
    assert [b.id for b in reader.batches()] == ids[:1:-1]
    assert reader.tasks(ids[0]) == []
    assert [b.id for b in reader.batches(limit=2)] == ids[:2:-1]
    assert [b.id for b in reader.batches(before=reader.batches()[0].seq)] == ids[3:1:-1]


def test_bad_journal_path_never_breaks_the_call(session_for: Callable[..., Any], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    session = session_for(journal_path=str(blocker / "journal.db"))
    assert journal.record_batch(session, "covalent", work, [LambdaFuture("t")]) is None


def test_tasks_left_pending_at_exit_are_closed_out(tmp_path: Path) -> None:
    path = tmp_path / "exit.db"
    writer = journal.JournalWriter(path)
    writer.add_batch(("b1", "map", "covalent", "m.f", 2, 0.0, 1, ""), [("b1", 0, "t0", 0.0), ("b1", 1, "t1", 0.0)])
    done = LambdaFuture("t0")
    done.finish(5)
    writer.task_done("b1", 0, 1.0, done)
    writer.close()  # what the process does at exit
    finished, abandoned = journal.Journal(path).tasks("b1")
    assert finished.status == "succeeded"
    assert (abandoned.status, abandoned.error_type) == ("cancelled", "ProcessExited")


def test_lambdarun_map_is_journaled_through_the_hook(inprocess_session: Any, tmp_path: Path) -> None:
    """The core records nothing: the dashboard plugin's ``lambdarun_tasks_submitted`` does,
    in ``journal.db`` in the target's state dir (a target capability; no stack started)."""
    import lambdarun
    from lambdarun.session import Session

    for plugin in _plugins():
        inprocess_session.pm.register(plugin)
    overrides = {"target": "local", "local": {"state_dir": str(tmp_path)}}
    with Session(inprocess_session.pm, inprocess_session.settings, overrides=overrides) as session:
        assert session.target.state_dir() == tmp_path
        assert list(lambdarun.map(work, [1, 2, 3], session=session, progress=False)) == [1, 2, 3]
        assert lambdarun.run(work, 7, session=session) == 7
    assert journal.flush()
    batches = journal.Journal(tmp_path / "journal.db").batches()
    assert [(b.kind, b.backend, b.total) for b in batches] == [("submit", "inprocess", 1), ("map", "inprocess", 3)]
    assert all(b.function.endswith("test_journal.work") for b in batches)
    assert not (tmp_path / "stack.json").exists()  # asking the state dir started nothing


def test_journal_follows_the_target_capability_not_its_name(session_for: Callable[..., Any]) -> None:
    assert session_for("aws").target.state_dir() is None
    assert journal.journal_enabled(session_for("aws")) is False
    assert journal.journal_enabled(session_for("local")) is True
    assert session_for("local").target.runs_on_this_machine is True
    assert session_for("aws").target.runs_on_this_machine is False
