"""State files only their owner reads: folders 0700, files 0600, created so from the start.

Run journals, durable checkpoint stores, a local stack's logs and credentials hold payloads,
tracebacks, output and keys. They are created with their final mode (``os.open`` with the
mode, never ``chmod`` after the fact, so there is no window where another user can open
them); a folder we own that already exists with a wider mode is narrowed to 0700.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["private_dir", "private_file", "write_private"]


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) 0700; an existing one we own becomes 0700."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` exists as a 0600 file (created so; its folder 0700), e.g. before
    SQLite opens it (SQLite gives its -wal/-shm/-journal files the database's mode)."""
    path = Path(path)
    # a missing folder is created 0700; an existing one is the user's choice (e.g. a
    # project directory) and left as it is
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # a file an older version left readable
    finally:
        os.close(fd)
    return path


def write_private(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, created 0600 (never readable by others, not
    even between create and rename); ``fsync`` flushes it to disk before the rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
