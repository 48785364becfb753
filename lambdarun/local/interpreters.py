"""Which interpreter runs a function: the one its ``Runtime`` names.

``Runtime: python3.X`` runs on the service's own interpreter (:attr:`ServiceOptions.python`)
when that is Python 3.X; otherwise on another installed ``python3.X`` that can import
``awslambdaric`` (AWS's runtime interface client, which the worker's bootstrap runs): the
first found on ``PATH`` (every entry, so a pyenv shim that cannot run is passed over), then in
pyenv's ``$PYENV_ROOT/versions/3.X.*/bin``. Each candidate is probed once (it must report
version 3.X and import ``awslambdaric``). A runtime with no such interpreter is refused at
CreateFunction/UpdateFunctionConfiguration with ``InvalidParameterValueException`` (the error
AWS answers for a runtime it will not run, e.g. a deprecated one) naming what to install.

Another interpreter cannot use the service's runtime directory (its ``awslambdaric`` has a C
extension built for the service's Python), so a zip function on it runs with that
interpreter's own site-packages visible (``-I`` without ``-S``): it is not isolated from
packages installed there, as it is on the service's interpreter (see :mod:`._sandbox`).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

from lambdarun.local.shapes import ApiError

_PROBE = "import sys, awslambdaric; print('%d.%d' % sys.version_info[:2])"


@functools.lru_cache(maxsize=64)
def _probe(executable: str) -> str | None:
    """The ``X.Y`` version of ``executable`` when it runs and imports awslambdaric, else None."""
    try:
        done = subprocess.run([executable, "-I", "-c", _PROBE], capture_output=True, timeout=30,
                              env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else None


def _candidates(version: str) -> list[str]:
    name = f"python{version}"
    out = [str(Path(d) / name) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        out += [str(p / "bin" / name) for p in sorted(pyenv.glob(f"{version}.*"), reverse=True)]
    return [c for c in out if os.access(c, os.X_OK) and Path(c).is_file()]


def interpreter_for(runtime: str, service_python: str) -> str | None:
    """The interpreter of ``runtime``: None for the service's own, else a path; refuses
    (ApiError) a Python runtime no installed interpreter can run."""
    match = re.fullmatch(r"python(3\.\d+)", runtime)
    if match is None:
        raise ApiError(400, "InvalidParameterValueException",
                       f"The local Lambda service runs Python 3 functions only (Runtime {runtime!r}).")
    version = match.group(1)
    if _probe(service_python) == version:
        return None
    tried = _candidates(version)
    for candidate in tried:
        if _probe(candidate) == version:
            return candidate
    own = _probe(service_python) or "?"
    raise ApiError(400, "InvalidParameterValueException",
                   f"The local Lambda service cannot run Runtime {runtime}: no python{version} "
                   f"that can import awslambdaric was found on PATH or in pyenv "
                   f"({len(tried)} candidate(s) tried). Install one (python{version} -m pip install "
                   f"awslambdaric), or use Runtime python{own}, the service's own Python.")
