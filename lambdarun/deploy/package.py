"""The deployment package: lambdarun, the installed plugins and the user's requirements.

What goes in the zip:

* **local distributions**: ``lambdarun`` and every distribution that registers an entry point
  in the ``lambdarun`` group (the backend plugins). An editable install (this repository's
  ``pip install -e``) is copied from its source tree, with a ``.dist-info`` written from its
  installed metadata so entry-point discovery works inside Lambda; a normal install is copied
  file by file from its ``RECORD``.
* **their dependencies**, resolved from ``Requires-Dist`` for the function's platform (markers
  evaluated for Linux, the function's Python version and machine). An installed distribution
  whose wheel tags fit the function (pure Python, or a manylinux wheel of the right CPython and
  architecture, glibc no newer than the Lambda image's) is copied from this environment;
  anything else is fetched by pip for the platform.
* **the user's requirements** (``--requirements FILE``), always through pip with
  ``--platform manylinux... --python-version X.Y --implementation cp --only-binary=:all:
  --target DIR``. A requirement with no compatible wheel is a
  :class:`~lambdarun.deploy.errors.NoCompatibleWheelError` naming the package.
* **user code** (``include``): files and directories copied to the root of the zip.

Distributions the Lambda runtime provides (boto3 and its dependencies) are left out.
Builds are cached under a key hashing every input (file contents, versions, options), so an
unchanged project reuses the previous zip byte for byte; zips are deterministic (sorted
entries, fixed timestamps), so Lambda's ``CodeSha256`` tells whether the function is current.

This module holds what to build (:class:`PackageSpec`), what was built
(:class:`BuiltPackage`) and the build itself (:func:`build_package`); the distributions and
wheels are :mod:`lambdarun.deploy.distributions`, the zips :mod:`lambdarun.deploy.ziptree`,
the cache :mod:`lambdarun.deploy.buildcache`.
"""


from __future__ import annotations

import os
from pathlib import Path

import attrs
import structlog

from lambdarun.deploy.buildcache import build_key, cached_build, pip_cache, store_build
from lambdarun.deploy.config import ARCHITECTURES, RUNTIME_PROVIDED, UNZIPPED_LIMIT
from lambdarun.deploy.distributions import (
    from_installed,
    from_source,
    normalize,
    pip_distributions,
    resolve,
    wheel_tag_compatible,
)
from lambdarun.deploy.errors import DeployError, PackageTooLargeError
from lambdarun.deploy.ziptree import Archive, FileTree, latest_build, walk, write_zip

__all__ = [
    "PackageSpec",
    "Archive",
    "BuiltPackage",
    "build_package",
    "default_cache_dir",
    "normalize",
    "wheel_tag_compatible",
]

log = structlog.get_logger(__name__)

#: bump when the layout of built packages changes (invalidates every cache entry)
BUILDER_VERSION = "1"
_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lambdarun" / "deploy"


@attrs.frozen
class PackageSpec:
    """What to build, for which platform.

    :param python_version: the function's Python, ``"3.11"``.
    :param architecture: ``"x86_64"`` or ``"arm64"``.
    :param requirements: a pip requirements file of the user's dependencies.
    :param include: user code copied to the root of the zip.
    :param layer: split dependencies into a layer zip (under ``python/``).
    :param unzipped_limit: largest unzipped size of code plus layer (Lambda: 250 MB).
    """

    python_version: str
    architecture: str = attrs.field(default="x86_64", validator=attrs.validators.in_(ARCHITECTURES))
    requirements: Path | None = None
    include: tuple[Path, ...] = ()
    exclude: frozenset[str] = attrs.field(
        default=frozenset(normalize(n) for n in RUNTIME_PROVIDED),
        converter=lambda names: frozenset(normalize(n) for n in names),
    )
    layer: bool = False
    cache_dir: Path = attrs.field(factory=default_cache_dir, converter=Path)
    unzipped_limit: int = UNZIPPED_LIMIT
    entry_point_group: str = "lambdarun"

    @property
    def runtime(self) -> str:
        return f"python{self.python_version}"

    @property
    def machine(self) -> str:
        return _MACHINE[self.architecture]

    @property
    def glibc(self) -> tuple[int, int]:
        """Newest glibc of the Lambda image (Amazon Linux 2 up to 3.11, AL2023 from 3.12)."""
        minor = int(self.python_version.split(".")[1])
        return (2, 26) if minor <= 11 else (2, 34)

    def marker_environment(self) -> dict[str, str]:
        full = f"{self.python_version}.0"
        return {
            "python_version": self.python_version,
            "python_full_version": full,
            "implementation_version": full,
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "platform_machine": self.machine,
            "platform_system": "Linux",
            "sys_platform": "linux",
            "os_name": "posix",
            "platform_release": "",
            "platform_version": "",
            "extra": "",
        }

    def pip_platforms(self) -> list[str]:
        low, high = 17, self.glibc[1]
        return [f"manylinux2014_{self.machine}"] + [
            f"manylinux_2_{minor}_{self.machine}" for minor in range(high, low - 1, -1)
        ]


@attrs.frozen
class BuiltPackage:
    """The function zip (and the layer zip in layer mode), with what went into them."""

    key: str
    function: Archive
    layer: Archive | None
    distributions: tuple[str, ...]
    cached: bool

    @property
    def unzipped_size(self) -> int:
        return self.function.unzipped_size + (self.layer.unzipped_size if self.layer else 0)


# ---------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------


def _check_size(spec: PackageSpec, function: FileTree, layer: FileTree | None) -> None:
    total = function.size() + (layer.size() if layer else 0)
    if total <= spec.unzipped_limit:
        return
    largest = function.largest() + (layer.largest() if layer else [])
    largest = sorted(largest, key=lambda kv: -kv[1])[:5]
    biggest = ", ".join(f"{name} ({size / 1e6:.1f} MB)" for name, size in largest)
    raise PackageTooLargeError(
        f"the deployment package is {total / 1e6:.1f} MB unzipped, over Lambda's limit of "
        f"{spec.unzipped_limit / 1e6:.1f} MB for code plus layers (largest: {biggest}). "
        "Nothing was built or uploaded. Drop dependencies the function does not need "
        "(requirements file, [deploy] exclude) or ship a container image instead; --layer "
        "does not help, the limit counts layers too."
    )


def build_package(spec: PackageSpec) -> BuiltPackage:
    """Build (or reuse from the cache) the deployment package described by ``spec``."""
    inputs = resolve(spec)
    spec.cache_dir.mkdir(parents=True, exist_ok=True)

    # user requirements (and dependencies with no usable local wheel) come from pip,
    # cached by what was asked for
    pip_dir = pip_cache(spec, inputs, BUILDER_VERSION)
    fetched = pip_distributions(pip_dir) if pip_dir else set()

    code = FileTree()
    deps = FileTree()
    names: list[str] = []
    for dist, editable in inputs.local:
        tree = from_source(dist, spec.entry_point_group) if editable else from_installed(dist)
        code.merge(tree)
        names.append(f"{dist.metadata['Name']}=={dist.version} ({'source' if editable else 'installed'})")
    for dist in inputs.installed:
        if normalize(dist.metadata["Name"]) in fetched:
            continue  # the user's requirements pinned another version: pip's wins
        deps.merge(from_installed(dist))
        names.append(f"{dist.metadata['Name']}=={dist.version} (installed wheel)")
    if pip_dir is not None:
        pip_tree = FileTree()
        for path in walk(pip_dir):
            rel = path.relative_to(pip_dir).as_posix()
            if rel == ".complete" or rel.startswith("bin/"):
                continue
            pip_tree.add_file(rel, path)
        deps.merge(pip_tree)
        names.extend(f"{n} (pip)" for n in sorted(fetched))
    for path in spec.include:
        path = Path(path).resolve()
        if not path.exists():
            raise DeployError(f"--include {path}: no such file or directory")
        if path.is_file():
            code.add_file(path.name, path)
        else:
            code.add_tree(path, f"{path.name}/" if (path / "__init__.py").exists() else "")

    layer_tree: FileTree | None = None
    if spec.layer:
        layer_tree = FileTree()
        layer_tree.merge(deps, prefix="python/")
    else:
        code.merge(deps)
    _check_size(spec, code, layer_tree)

    key = build_key(
        [BUILDER_VERSION, spec.python_version, spec.architecture, spec.layer, code.digest(),
         layer_tree.digest() if layer_tree else None]
    )
    entry = spec.cache_dir / key
    found = cached_build(entry)
    if found is not None:
        function, layer, distributions = found
        log.info("deployment package unchanged: reusing the cached build", key=key)
        return BuiltPackage(key, function, layer, distributions, cached=True)
    previous_function = latest_build(spec.cache_dir, "function.zip")
    previous_layer = latest_build(spec.cache_dir, "layer.zip")
    entry.mkdir(parents=True, exist_ok=True)
    function = write_zip(code, entry / "function.zip", previous_function)
    layer = write_zip(layer_tree, entry / "layer.zip", previous_layer) if layer_tree is not None else None
    store_build(entry, function, layer, names)
    log.info("deployment package built", key=key, size=function.size, unzipped=function.unzipped_size)
    return BuiltPackage(key, function, layer, tuple(names), cached=False)
