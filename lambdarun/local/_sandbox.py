"""What a zip function can import: its own code plus what Lambda's Python runtime provides.

On Lambda, a zip function's ``sys.path`` is its task root (``/var/task``), the runtime's own
directory (``/var/runtime``: ``awslambdaric`` and its dependencies, plus the AWS SDK) and the
standard library; nothing else. Locally, zip functions run on the service's interpreter with
``-I -S`` (no site-packages, no ``PYTHON*`` variables, no user site) and ``sys.path`` set to
``[task_root, *PYTHONPATH of the function, runtime_dir, stdlib...]``, where ``runtime_dir`` is
a per-stack directory of symlinks to the packages of :data:`RUNTIME_DISTRIBUTIONS` found in
this interpreter's environment (by their distribution files, so ``importlib.metadata`` works
for them too). So a zip that forgot to vendor a dependency fails locally as it would on Lambda.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import threading
from pathlib import Path

import structlog

__all__ = ["RUNTIME_DISTRIBUTIONS", "ISOLATED_FLAGS", "SYS_PATH_VAR", "build_runtime_dir"]

log = structlog.get_logger(__name__)

#: distributions Lambda's Python runtime provides (the runtime interface client and its
#: dependencies, the AWS SDK for Python with its dependencies, and AWS's durable execution
#: SDK, which the managed Python runtimes bundle: its ``lambda_service._is_bundled`` reads the
#: ``+bundled`` label the runtime stamps on it)
RUNTIME_DISTRIBUTIONS = (
    "awslambdaric",
    "simplejson",
    "snapshot-restore-py",
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "urllib3",
    "six",
    "aws-durable-execution-sdk-python",
)
#: interpreter flags of a zip function's worker: isolated mode, no ``site``, unbuffered,
#: no bytecode written into the code directory
ISOLATED_FLAGS = ("-I", "-S", "-u", "-B")
#: environment variable telling ``_bootstrap.py`` which entries to put first on ``sys.path``
SYS_PATH_VAR = "_LAMBDARUN_LOCAL_SYS_PATH"

_build_lock = threading.Lock()


def _top_level_entries(dist: importlib.metadata.Distribution) -> dict[str, Path]:
    """Top-level importable entries (packages, modules, extension modules, the dist-info
    directory, and the cached bytecode of top-level modules) of an installed distribution,
    by their path relative to the runtime directory."""
    out: dict[str, Path] = {}
    for file in dist.files or ():
        first = file.parts[0]
        if first == ".." or first.endswith(".data"):
            continue
        if first == "__pycache__":  # bytecode of a top-level module (six.py, ...)
            if len(file.parts) == 2 and file.name.endswith(".pyc"):
                out.setdefault(str(file), Path(dist.locate_file(file)))
            continue
        if len(file.parts) == 1 and not first.endswith((".py", ".so", ".pyd")):
            continue  # a stray top-level file (LICENSE, ...) is nothing to import
        out.setdefault(first, Path(dist.locate_file(first)))
    return out


def build_runtime_dir(path: Path, distributions: tuple[str, ...] = RUNTIME_DISTRIBUTIONS) -> Path:
    """(Re)create ``path`` holding symlinks to the runtime's packages; returns ``path``.

    Whatever ``path`` held before is replaced (a shared stack's state directory outlives the
    environment it was built from). A distribution that is not installed here is skipped
    (and logged): functions then cannot import it, as on a runtime without it.
    """
    with _build_lock:
        if path.is_dir():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        for name in distributions:
            try:
                dist = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                log.debug("runtime distribution not installed, zip functions cannot import it",
                          distribution=name)
                continue
            for entry, source in _top_level_entries(dist).items():
                link = path / entry
                if link.is_symlink() or not source.exists():
                    continue
                link.parent.mkdir(exist_ok=True)
                os.symlink(source.resolve(), link)
        return path
