"""Dependency layers for electrons: ``ct.DepsPip`` installed once per requirement set.

Covalent runs ``DepsPip`` as a ``pip install`` inside the task's environment before every
call. On Lambda that cannot work (the runtime's site-packages are read-only; on the local
target it would install into the caller's own environment). The executor takes the
requirement set off the electron instead, installs it with ``pip install --target`` into a
directory keyed by the requirement set, Python version and platform (a *layer*, built once and
cached), and runs the electron on a function whose ``PYTHONPATH`` includes that directory
(``<function_name>-deps-<key>``, created on the local target; on AWS, deploy a function of
that name with the same requirements in ``[deploy] requirements``).

Layers live under ``$XDG_CACHE_HOME/lambdarun/covalent-layers`` (default
``~/.cache/lambdarun/covalent-layers``), folders 0700.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import structlog

from lambdarun.errors import LambdarunError

__all__ = ["Layer", "DependencyInstallError", "requirement_set", "ensure_layer", "layers_root"]

log = structlog.get_logger(__name__)

#: how long one ``pip install`` may take
PIP_TIMEOUT = 600


class DependencyInstallError(LambdarunError):
    """An electron's ``DepsPip`` requirements could not be installed; the task did not run."""


@attrs.frozen
class Layer:
    #: hash of the requirement set, Python version and platform
    key: str
    #: the directory to put on the function's ``PYTHONPATH``
    path: Path
    requirements: tuple[str, ...]


def requirement_set(packages: Iterable[str] = (), requirements_content: str = "") -> tuple[str, ...]:
    """The normalized requirement lines (comments and blanks dropped, sorted, unique)."""
    lines = list(packages or ())
    lines += (requirements_content or "").splitlines()
    out = set()
    for line in lines:
        line = str(line).split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.add(line)
    return tuple(sorted(out))


def layers_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lambdarun" / "covalent-layers"


def _key(requirements: tuple[str, ...]) -> str:
    ident = "\n".join(
        [f"python{sys.version_info.major}.{sys.version_info.minor}", platform.machine(), sys.platform, *requirements]
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ensure_layer(requirements: tuple[str, ...], *, root: Path | None = None, what: str = "the electron") -> Layer:
    """The layer of ``requirements``, installed on first use (concurrent callers wait)."""
    root = root or layers_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _key(requirements)
    final = root / key
    layer = Layer(key=key, path=final / "python", requirements=requirements)
    if (final / ".complete").exists():
        return layer
    with _locked(root / f"{key}.lock"):
        if (final / ".complete").exists():
            return layer
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            (staging / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
            command = [
                sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                "--quiet", "--target", str(staging / "python"), "-r", str(staging / "requirements.txt"),
            ]
            log.info("installing an electron's DepsPip layer", key=key, requirements=list(requirements))
            try:
                proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                      timeout=PIP_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise DependencyInstallError(
                    f"installing the DepsPip requirements of {what} ({', '.join(requirements)}) took "
                    f"more than {PIP_TIMEOUT} s; the task did not run"
                ) from exc
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip()[-2000:]
                raise DependencyInstallError(
                    f"pip could not install the DepsPip requirements of {what} "
                    f"({', '.join(requirements)}); the task did not run. Fix the requirement "
                    f"(name, version, index) and dispatch again. pip said:\n{tail}"
                )
            (staging / ".complete").write_text("\n".join(requirements) + "\n", encoding="utf-8")
            if final.exists():  # a half-built layer of a crashed run
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return layer
