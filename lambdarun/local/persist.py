"""What a shared local stack keeps on disk so that ``lambdarun local up`` survives a restart.

Under ``<state_dir>/shared/state/`` (folders 0700, files 0600, written atomically):

* ``functions.json``: the Lambda control plane (configuration, code location, reserved
  concurrency, event-invoke config, tags), rewritten after every change
  (:class:`~lambdarun.local.function_store.FunctionStore`);
* ``events.jsonl``: every accepted ``Event`` invocation not delivered yet, with its attempt
  count (:class:`~lambdarun.local.event_store.EventStore`, an append-only log); forgotten once it succeeded, failed for
  good or was stopped;
* ``moto.jsonl``: a journal of the successful *writes* moto served (:class:`~lambdarun.local.moto_journal.MotoJournal`),
  replayed through moto's WSGI application before its server listens again. moto 5.2 has no
  persistence of its own (its "recorder" logs every request, reads included, before it is
  processed, and replays over HTTP); the journal records after the response, skips reads and
  failures, and compacts S3 objects that were written then deleted.

:func:`sweep` removes what no live stack owns: extracted code no function refers to, and the
run directories of embedded stacks whose process is gone.

Files that are not the user's own, or that others may write, are refused (moved aside with a
warning, never loaded); a malformed file is moved aside too, so nothing is silently lost
(:mod:`.state_files`).

This module holds :class:`ServiceState` (the locked state directory of one service) and the
clean-up functions; each file kind has its own module, re-exported here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

import attrs
import structlog

from lambdarun.local.event_store import EVENT_FILE_LIMIT, EventStore, StoredEvent
from lambdarun.local.function_store import FUNCTIONS_FILE_LIMIT, FunctionStore
from lambdarun.local.moto_journal import JournalMiddleware, MotoJournal, compact_entries, is_write
from lambdarun.local.stack_info import pid_running
from lambdarun.local.state_files import (
    FORMAT_VERSION,
    PersistError,
    open_trusted,
    quarantine,
    read_trusted,
    secure_dir,
)
from lambdarun.private_files import write_private

__all__ = [
    "EVENT_FILE_LIMIT",
    "EventStore",
    "FORMAT_VERSION",
    "FunctionStore",
    "JournalMiddleware",
    "MotoJournal",
    "PersistError",
    "ServiceState",
    "StateInUseError",
    "StoredEvent",
    "compact_entries",
    "forget_saved_state",
    "is_write",
    "open_trusted",
    "quarantine",
    "read_trusted",
    "remove_orphan_code",
    "saved_state_summary",
    "secure_dir",
    "sweep",
    "write_private",
]

log = structlog.get_logger(__name__)

_EMBEDDED_DIR = re.compile(r"^embedded-(\d+)-[0-9a-f]+$")


def remove_orphan_code(functions_dir: Path, referenced: Iterable[Path]) -> int:
    """Remove ``functions_dir/<name>/code-*`` directories not in ``referenced`` (and the
    emptied ``<name>`` directories). Returns the number of code directories removed."""
    keep = {Path(p).resolve() for p in referenced}
    removed = 0
    if not functions_dir.is_dir():
        return 0
    for fn_dir in functions_dir.iterdir():
        if not fn_dir.is_dir() or fn_dir.is_symlink():
            continue
        for code in fn_dir.iterdir():
            # code-<id>/ and its uploaded zip code-<id>.zip (see function_code.uploaded_zip)
            owner = code.with_name(code.name[:-4]) if code.name.endswith(".zip") else code
            if code.name.startswith("code-") and owner.resolve() not in keep:
                if code.is_dir() and not code.is_symlink():
                    shutil.rmtree(code, ignore_errors=True)
                    removed += 1
                else:
                    code.unlink(missing_ok=True)
        try:
            fn_dir.rmdir()  # only when empty
        except OSError:
            pass
    return removed


def sweep(state_dir: Path, *, shared_code: bool = False) -> dict[str, int]:
    """Remove what no running stack owns under ``state_dir``:

    * ``embedded-<pid>-<id>/`` run directories whose process is gone (an embedded stack
      removes its own when it stops; not when it is killed);
    * with ``shared_code`` (only when no shared stack runs: ``local down``), the extracted
      code under ``shared/functions/`` that no saved function uses. When the saved functions
      cannot be read, no code is removed.

    Nothing else (``stack.json``, keys, logs, saved state) is touched. Returns the counts.
    """
    removed_runs = 0
    if state_dir.is_dir():
        for entry in state_dir.iterdir():
            match = _EMBEDDED_DIR.match(entry.name)
            if match and entry.is_dir() and not entry.is_symlink() and not pid_running(int(match.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
                removed_runs += 1
    removed_code = 0
    if shared_code:
        shared = state_dir / "shared"
        saved = shared / "state" / "functions.json"
        try:
            doc = json.loads(read_trusted(saved, FUNCTIONS_FILE_LIMIT)) if saved.exists() else {"functions": []}
            referenced = [
                Path(f["code_dir"]) for f in doc["functions"]
                if not f.get("local_code") and isinstance(f.get("code_dir"), str)
            ]
        except (PersistError, ValueError, KeyError, TypeError) as e:
            # which code is in use is unknown: remove none (the next `up` decides)
            log.warning("not removing extracted code: saved functions unreadable", error=str(e))
        else:
            removed_code = remove_orphan_code(shared / "functions", referenced)
    if removed_runs or removed_code:
        log.info("removed stale local stack files", run_dirs=removed_runs, code_dirs=removed_code)
    return {"run_dirs": removed_runs, "code_dirs": removed_code}


def forget_saved_state(state_dir: Path) -> None:
    """Remove what a shared stack saved for the next start (functions, queued events, moto's
    journal, extracted code), and nothing else of ``state_dir``."""
    shared = state_dir / "shared"
    state = shared / "state"
    for name in ("functions.json", "moto.jsonl"):
        try:
            (state / name).unlink()
        except FileNotFoundError:
            pass
    shutil.rmtree(state / "events", ignore_errors=True)
    shutil.rmtree(shared / "functions", ignore_errors=True)
    log.info("saved local stack state forgotten", state_dir=str(state_dir))


def saved_state_summary(state_dir: Path) -> str:
    """What a shared stack saved in ``state_dir``, in words ("" when nothing): for
    ``lambdarun local status``. Reads only; an unreadable file counts as nothing."""
    state = state_dir / "shared" / "state"
    parts = []
    try:
        doc = json.loads(read_trusted(state / "functions.json", FUNCTIONS_FILE_LIMIT))
        functions = len(doc["functions"])
    except (PersistError, ValueError, KeyError, TypeError):
        functions = 0
    if functions:
        parts.append(f"{functions} function{'s' if functions != 1 else ''}")
    try:
        events = len(EventStore.read(state))
    except PersistError:
        events = 0
    if events:
        parts.append(f"{events} queued event{'s' if events != 1 else ''}")
    journal = state / "moto.jsonl"
    if journal.is_file() and journal.stat().st_size:
        parts.append(f"moto data ({journal.stat().st_size / 1e6:.1f} MB journal)")
    return ", ".join(parts)


class StateInUseError(PersistError):
    """Another live process holds the state directory (another ``local up`` on it)."""


@attrs.define(eq=False)
class ServiceState:
    """The persistent state of one local Lambda service (``<run_dir>/state/``), held with an
    exclusive ``flock`` on ``state/.lock`` from :meth:`open` to :meth:`close` (the kernel
    releases it when the process dies, however it dies)."""

    directory: Path
    functions: FunctionStore
    events: EventStore
    lock_fd: int
    _closed: bool = False
    _close_lock: threading.Lock = attrs.field(factory=threading.Lock)

    @classmethod
    def open(cls, directory: Path) -> ServiceState:
        """Lock and open ``directory``; :class:`StateInUseError` when another process has it."""
        import fcntl

        directory = secure_dir(directory)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateInUseError(f"{directory} is in use by another local stack") from None
        return cls(directory, FunctionStore(directory), EventStore(directory), fd)

    def close(self) -> None:
        """Close the files and release the lock (once; later calls do nothing)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.events.close()
        os.close(self.lock_fd)
