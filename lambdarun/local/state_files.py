"""Trusted state files: private folders, reading only files this user owns and nobody else
may write, and moving aside (never loading) those that fail."""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path

import structlog

from lambdarun.private_files import private_dir

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1


class PersistError(Exception):
    """A state file that cannot be trusted or read (it is moved aside, never loaded)."""


def secure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700; returns it (see :func:`private_dir`)."""
    path = private_dir(path)
    os.chmod(path, 0o700)  # also a folder of another mode we own: state is never shared
    return path


def open_trusted(path: Path) -> io.BufferedReader:
    """``path`` opened for reading if this user owns it, nobody else may write it and it is a
    regular file (not a link); else :class:`PersistError` (FileNotFoundError if absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise PersistError(f"cannot open {path}: {e}") from e
    f = os.fdopen(fd, "rb")
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PersistError(f"{path} is not a regular file")
        if st.st_uid != os.getuid():
            raise PersistError(f"{path} belongs to uid {st.st_uid}, not to this user")
        if st.st_mode & 0o022:
            raise PersistError(f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})")
    except BaseException:
        f.close()
        raise
    return f  # type: ignore[return-value]


def read_trusted(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` (see :func:`open_trusted`) if at most ``limit`` bytes; else
    :class:`PersistError`."""
    try:
        f = open_trusted(path)
    except FileNotFoundError as e:
        raise PersistError(f"cannot open {path}: {e}") from e
    with f:
        if os.fstat(f.fileno()).st_size > limit:
            raise PersistError(f"{path} is larger than {limit} bytes")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise PersistError(f"{path} is larger than {limit} bytes")
    return data


def quarantine(path: Path, reason: str) -> None:
    """Move a refused state file aside (``<name>.refused-<time>``) and say so."""
    target = path.with_name(f"{path.name}.refused-{int(time.time() * 1000)}")
    try:
        os.replace(path, target)
    except OSError:
        target = path
    log.warning("local stack state file refused, not loaded", path=str(path),
                moved_to=str(target), reason=reason)
