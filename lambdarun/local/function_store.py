"""``functions.json``: the saved control plane of a shared stack."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


from lambdarun.private_files import write_private
from lambdarun.local.state_files import FORMAT_VERSION, PersistError, quarantine, read_trusted, secure_dir

#: functions.json: 10,000 functions of ~8 KiB each at most
FUNCTIONS_FILE_LIMIT = 80 * 1024 * 1024


class FunctionStore:
    """``functions.json``: every function's persistent fields (a list of plain dicts; the
    service decides what a function is, this class only keeps them)."""

    def __init__(self, directory: Path) -> None:
        self.path = secure_dir(directory) / "functions.json"
        self._lock = threading.Lock()

    def save(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        """Write what ``snapshot()`` returns. Concurrent saves never write an older
        snapshot over a newer one: each takes its snapshot under the store's lock."""
        with self._lock:
            doc = {"version": FORMAT_VERSION, "saved": time.time(), "functions": snapshot()}
            write_private(self.path, json.dumps(doc, indent=1).encode(), fsync=True)

    def load(self) -> list[dict[str, Any]]:
        """The saved functions ([] when none, or when the file was refused)."""
        if not self.path.exists():
            return []
        try:
            doc = json.loads(read_trusted(self.path, FUNCTIONS_FILE_LIMIT))
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                raise PersistError(f"unknown format (version {doc.get('version') if isinstance(doc, dict) else None!r})")
            functions = doc.get("functions")
            if not isinstance(functions, list) or not all(isinstance(f, dict) for f in functions):
                raise PersistError("'functions' is not a list of objects")
        except (PersistError, ValueError) as e:
            quarantine(self.path, str(e))
            return []
        return functions
