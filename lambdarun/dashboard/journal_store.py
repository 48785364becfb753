"""The run journal's file: where it is, whether it is on, its schema and its connection.

Shared by the writer (:mod:`lambdarun.dashboard.journal_writer`, in the client process)
and the reader (:class:`lambdarun.dashboard.journal.Journal`, in the dashboard's), which
must agree on the schema. See :mod:`lambdarun.dashboard.journal` for the whole.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from lambdarun.errors import LambdarunError
from lambdarun.private_files import private_file

#: batches kept by default
DEFAULT_KEEP = 500
JOURNAL_FILE = "journal.db"

TASK_STATUSES = ("pending", "succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    kind     TEXT NOT NULL,
    backend  TEXT NOT NULL,
    function TEXT NOT NULL,
    total    INTEGER NOT NULL,
    created  REAL NOT NULL,
    pid      INTEGER NOT NULL,
    argv     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    batch_id      TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    task_id       TEXT NOT NULL,
    status        TEXT NOT NULL,
    submitted     REAL NOT NULL,
    finished      REAL,
    elapsed_ms    REAL,
    result_bytes  INTEGER,
    stdout        TEXT,
    stderr        TEXT,
    error_type    TEXT,
    error_message TEXT,
    traceback     TEXT,
    info          TEXT,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (batch_id, status, idx);
"""


class JournalError(LambdarunError):
    """The run journal could not be opened or read."""



def _dashboard_section(settings: Any) -> Any:
    sections = getattr(settings, "sections", {}) or {}
    return sections.get("dashboard")


def _target_state_dir(session: Any) -> Path | None:
    """The target's local state folder (a target capability; None: the target keeps none
    on this machine, or is a third-party target written before ``state_dir`` existed)."""
    provider = getattr(session.target, "state_dir", None)
    state_dir = provider() if provider is not None else None
    return Path(state_dir) if state_dir is not None else None


def journal_enabled(session: Any) -> bool:
    """On for a target with a local state dir (the ``local`` target), or when
    ``[dashboard] journal = "on"``; ``"off"`` disables it everywhere."""
    section = _dashboard_section(session.settings)
    mode = getattr(section, "journal", "auto") if section is not None else "auto"
    if mode == "off":
        return False
    if mode == "on":
        return True
    return _target_state_dir(session) is not None


def journal_path(session: Any) -> Path:
    """``[dashboard] journal_path``, else ``journal.db`` in the target's state dir, else in
    the ``[local] state_dir`` setting (a target without local state, journal forced on)."""
    settings = session.settings
    section = _dashboard_section(settings)
    explicit = getattr(section, "journal_path", None) if section is not None else None
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = _target_state_dir(session)
    if base is None:
        local = (getattr(settings, "sections", {}) or {}).get("local")
        if local is None or not getattr(local, "state_dir", None):
            raise JournalError(
                f"the target {settings.target!r} keeps no state on this machine: set "
                "[dashboard] journal_path to the journal's file, or [dashboard] journal = \"off\""
            )
        base = Path(local.state_dir)
    return (base.expanduser() / JOURNAL_FILE).resolve()


def journal_keep(settings: Any) -> int:
    """``[dashboard] journal_keep``: the newest batches kept (default :data:`DEFAULT_KEEP`)."""
    section = _dashboard_section(settings)
    return int(getattr(section, "journal_keep", DEFAULT_KEEP) or DEFAULT_KEEP) if section is not None else DEFAULT_KEEP


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating it 0600, with its schema) the journal file at ``path``."""
    try:
        private_file(path)  # 0600 in a 0700 folder: runs hold arguments, outputs, tracebacks
        conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise JournalError(
            f"cannot open the run journal {path}: {exc}; set [dashboard] journal_path to a writable "
            "file or [dashboard] journal = \"off\""
        ) from exc
    return conn
