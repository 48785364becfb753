"""The stack's envelope signing key (``<run_dir>/signing-key``, 0600): kept across restarts
of a persisting stack when it is still this user's private, valid file; new otherwise."""

from __future__ import annotations

import os
from pathlib import Path

from lambdarun.local.state_files import PersistError, read_trusted
from lambdarun.private_files import private_dir, write_private

#: the stack's envelope signing key, in its run directory (mode 0600)
SIGNING_KEY_FILE = "signing-key"


def kept_signing_key(run_dir: Path) -> bytes | None:
    """The key an earlier start of this (persisting) stack kept in ``run_dir``, if it is this
    user's private regular file and a valid key; None otherwise (a new one is made)."""
    from lambdarun.config import MIN_SIGNING_KEY_BYTES

    try:
        key = read_trusted(run_dir / SIGNING_KEY_FILE, 4096).strip()
    except (PersistError, OSError):
        return None
    if len(key) < MIN_SIGNING_KEY_BYTES or os.stat(run_dir / SIGNING_KEY_FILE).st_mode & 0o077:
        return None
    return key


def new_signing_key(run_dir: Path) -> bytes:
    """Generate a signing key and keep it in ``run_dir`` (0700) as ``signing-key`` (0600)."""
    from lambdarun.signing import generate_key

    key = generate_key().encode("ascii")
    write_private(private_dir(run_dir) / SIGNING_KEY_FILE, key)
    return key
