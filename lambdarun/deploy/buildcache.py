"""The build cache of ``lambdarun deploy`` (``[deploy] cache_dir``): what pip fetched, by
what was asked for, and every built package, by a key hashing all of its inputs (an
unchanged project reuses its previous zips byte for byte)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.deploy.distributions import Inputs, pip_install
from lambdarun.deploy.ziptree import Archive

if TYPE_CHECKING:
    from lambdarun.deploy.package import PackageSpec

__all__ = ["build_key", "pip_cache", "cached_build", "store_build"]


def build_key(inputs: Sequence[Any], length: int = 32) -> str:
    """A cache key: the SHA-256 of ``inputs`` as JSON, shortened."""
    return hashlib.sha256(json.dumps(list(inputs)).encode()).hexdigest()[:length]


def pip_cache(spec: PackageSpec, inputs: Inputs, builder_version: str) -> Path | None:
    """The directory holding what pip fetched for ``inputs`` (fetching it on a miss), or
    None when nothing needs fetching. A directory is complete once ``.complete`` exists."""
    if not (inputs.requirements_text or inputs.fetch):
        return None
    pip_key = build_key(
        [builder_version, spec.python_version, spec.architecture, inputs.requirements_text, inputs.fetch], 24
    )
    pip_dir = spec.cache_dir / "pip" / pip_key
    if not (pip_dir / ".complete").exists():
        work = Path(tempfile.mkdtemp(prefix="pip-", dir=spec.cache_dir))
        try:
            pip_install(spec, spec.requirements, inputs.fetch, work)
            if pip_dir.exists():
                shutil.rmtree(pip_dir)
            pip_dir.parent.mkdir(parents=True, exist_ok=True)
            os.replace(work, pip_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        (pip_dir / ".complete").write_text("ok\n")
    return pip_dir


def cached_build(entry: Path) -> tuple[Archive, Archive | None, tuple[str, ...]] | None:
    """(function, layer, distributions) of the build stored in ``entry``, when it is whole."""
    manifest = entry / "manifest.json"
    if not manifest.exists():
        return None
    doc = json.loads(manifest.read_text())
    function = _archive_from(doc["function"], entry)
    layer = _archive_from(doc["layer"], entry) if doc.get("layer") else None
    if function is None or (layer is None and doc.get("layer")):
        return None
    return function, layer, tuple(doc["distributions"])


def store_build(entry: Path, function: Archive, layer: Archive | None, distributions: Sequence[str]) -> None:
    """Record the build written in ``entry`` (its manifest makes it a cache hit next time)."""
    doc = {
        "function": attrs.asdict(function, value_serializer=_ser),
        "layer": attrs.asdict(layer, value_serializer=_ser) if layer else None,
        "distributions": list(distributions),
    }
    (entry / "manifest.json").write_text(json.dumps(doc, indent=1))


def _ser(inst: Any, field: Any, value: Any) -> Any:
    return value.name if isinstance(value, Path) else value


def _archive_from(doc: Mapping[str, Any], entry: Path) -> Archive | None:
    path = entry / doc["path"]
    if not path.exists() or path.stat().st_size != doc["size"]:
        return None
    return Archive(path, doc["code_sha256"], doc["size"], doc["unzipped_size"])
