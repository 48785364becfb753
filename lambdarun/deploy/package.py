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
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import struct
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog

from lambdarun.deploy.config import ARCHITECTURES, RUNTIME_PROVIDED, UNZIPPED_LIMIT
from lambdarun.deploy.errors import (
    DependencyInstallError,
    DeployError,
    NoCompatibleWheelError,
    PackageTooLargeError,
)

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
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


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
class Archive:
    """One built zip. ``code_sha256`` is what Lambda reports as ``CodeSha256``."""

    path: Path
    code_sha256: str
    size: int
    unzipped_size: int

    def read(self) -> bytes:
        return self.path.read_bytes()


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
# wheel tags
# ---------------------------------------------------------------------------------------

_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def _expand_tag(tag: str) -> Iterator[tuple[str, str, str]]:
    interps, abis, plats = tag.split("-")
    for interp in interps.split("."):
        for abi in abis.split("."):
            for plat in plats.split("."):
                yield interp, abi, plat


def wheel_tag_compatible(tag: str, spec: PackageSpec) -> bool:
    """True when a wheel tag (``cp311-cp311-manylinux_2_17_x86_64``) runs on the function."""
    major, minor = spec.python_version.split(".")
    cp = f"cp{major}{minor}"
    for interp, abi, plat in _expand_tag(tag):
        if plat != "any":
            match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", plat)
            if match:
                glibc, machine = (int(match[1]), int(match[2])), match[3]
            else:
                legacy, _, machine = plat.partition("_")
                if legacy not in _LEGACY_MANYLINUX:
                    continue
                glibc = _LEGACY_MANYLINUX[legacy]
            if machine != spec.machine or glibc > spec.glibc:
                continue
        if abi == "none":
            if interp in (f"py{major}", f"py{major}{minor}", cp):
                return True
        elif abi == "abi3":
            if interp.startswith(f"cp{major}") and int(interp[3:] or 0) <= int(minor):
                return True
        elif abi == cp and interp == cp:
            return True
    return False


def _installed_compatible(dist: importlib.metadata.Distribution, spec: PackageSpec) -> bool:
    wheel = dist.read_text("WHEEL")
    if wheel:
        tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
        if tags:
            return any(wheel_tag_compatible(tag, spec) for tag in tags)
    # no wheel metadata: accept it only when nothing compiled is inside
    return not any(str(f).endswith((".so", ".pyd", ".dylib")) for f in dist.files or ())


# ---------------------------------------------------------------------------------------
# collecting the inputs
# ---------------------------------------------------------------------------------------


@attrs.define
class _Tree:
    """arcname -> file path (or generated bytes), and the size of it all."""

    files: dict[str, Path] = attrs.field(factory=dict)
    generated: dict[str, bytes] = attrs.field(factory=dict)

    def add_file(self, arcname: str, path: Path) -> None:
        self.files[arcname] = path
        self.generated.pop(arcname, None)

    def add_bytes(self, arcname: str, data: bytes) -> None:
        self.generated[arcname] = data
        self.files.pop(arcname, None)

    def add_tree(self, root: Path, prefix: str) -> None:
        for path in _walk(root):
            self.add_file(prefix + path.relative_to(root).as_posix(), path)

    def merge(self, other: _Tree, prefix: str = "") -> None:
        for name, path in other.files.items():
            self.add_file(prefix + name, path)
        for name, data in other.generated.items():
            self.add_bytes(prefix + name, data)

    def names(self) -> list[str]:
        return sorted({*self.files, *self.generated})

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files.values()) + sum(map(len, self.generated.values()))

    def largest(self, n: int = 5) -> list[tuple[str, int]]:
        totals: dict[str, int] = {}
        for name, path in self.files.items():
            top = name.split("/", 2)[1] if name.startswith("python/") else name.split("/", 1)[0]
            totals[top] = totals.get(top, 0) + path.stat().st_size
        return sorted(totals.items(), key=lambda kv: -kv[1])[:n]

    def digest(self) -> str:
        h = hashlib.sha256()
        for name in self.names():
            h.update(name.encode() + b"\0")
            if name in self.files:
                h.update(_file_digest(self.files[name]))
            else:
                h.update(hashlib.sha256(self.generated[name]).digest())
        return h.hexdigest()


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith(_SKIP_SUFFIXES):
                yield Path(dirpath) / name


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def _meta_path(dist: importlib.metadata.Distribution) -> str:
    return str(getattr(dist, "_path", ""))


def _is_editable(dist: importlib.metadata.Distribution) -> bool:
    """Installed in development mode: pip -e (direct_url.json) or an in-tree .egg-info."""
    if _meta_path(dist).endswith(".egg-info"):
        return True
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        return bool(json.loads(text).get("dir_info", {}).get("editable"))
    except ValueError:
        return False


def local_distributions(group: str = "lambdarun") -> list[importlib.metadata.Distribution]:
    """``lambdarun`` plus every distribution with an entry point in ``group``."""
    names = {"lambdarun"}
    for ep in importlib.metadata.entry_points(group=group):
        if ep.dist is not None:
            names.add(normalize(ep.dist.name))
    return [_pick_distribution(name) for name in sorted(names)]


def _pick_distribution(name: str) -> importlib.metadata.Distribution:
    """The installed metadata of ``name``: a site-packages .dist-info wins over an in-tree
    .egg-info that happens to be on sys.path (a source checkout as working directory)."""
    candidates = list(importlib.metadata.distributions(name=name))
    if not candidates:
        return importlib.metadata.distribution(name)
    candidates.sort(key=lambda d: (not _meta_path(d).endswith(".dist-info"), not _is_editable(d)))
    return candidates[0]


def _top_levels(dist: importlib.metadata.Distribution, group: str) -> list[str]:
    text = dist.read_text("top_level.txt")
    names = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not names:
        names = sorted({ep.module.split(".")[0] for ep in dist.entry_points if ep.group == group})
    if not names and normalize(dist.metadata["Name"]) == "lambdarun":
        names = ["lambdarun"]
    return names


def _dist_info_name(dist: importlib.metadata.Distribution) -> str:
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    return f"{name}-{dist.version}.dist-info"


def _from_source(dist: importlib.metadata.Distribution, group: str) -> _Tree:
    """An editable distribution: its packages from the source tree plus a fresh dist-info."""
    tree = _Tree()
    for top in _top_levels(dist, group):
        spec = importlib.util.find_spec(top)
        if spec is None:
            raise DeployError(
                f"cannot find the source of package {top!r} of {dist.metadata['Name']}; "
                "reinstall it (pip install -e <its directory>)"
            )
        if spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                tree.add_tree(Path(location), f"{top}/")
        elif spec.origin:
            tree.add_file(Path(spec.origin).name, Path(spec.origin))
    info = _dist_info_name(dist)
    for meta, source in (("METADATA", ("METADATA", "PKG-INFO")), ("entry_points.txt", ("entry_points.txt",)), ("top_level.txt", ("top_level.txt",))):
        text = next((t for t in map(dist.read_text, source) if t is not None), None)
        if text is not None:
            tree.add_bytes(f"{info}/{meta}", text.encode())
    tree.add_bytes(f"{info}/INSTALLER", b"lambdarun-deploy\n")
    tree.add_bytes(
        f"{info}/WHEEL",
        b"Wheel-Version: 1.0\nGenerator: lambdarun-deploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    )
    record = "".join(f"{name},,\n" for name in [*tree.names(), f"{info}/RECORD"])
    tree.add_bytes(f"{info}/RECORD", record.encode())
    return tree


def _from_installed(dist: importlib.metadata.Distribution) -> _Tree:
    """A distribution installed from a wheel: the files its RECORD lists."""
    tree = _Tree()
    for rel in dist.files or ():
        name = rel.as_posix()
        if name.startswith("..") or "__pycache__" in name or name.endswith(_SKIP_SUFFIXES):
            continue
        path = Path(dist.locate_file(rel))
        if path.is_file():
            tree.add_file(name, path)
    return tree


def _requires(dist: importlib.metadata.Distribution, env: Mapping[str, str]) -> list[Any]:
    from packaging.requirements import Requirement

    out = []
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(dict(env)):
            continue
        out.append(req)
    return out


@attrs.define
class _Inputs:
    local: list[tuple[importlib.metadata.Distribution, bool]]  # (dist, editable)
    installed: list[importlib.metadata.Distribution]
    fetch: list[str]
    requirements_text: str


def _resolve(spec: PackageSpec) -> _Inputs:
    env = spec.marker_environment()
    local = [(d, _is_editable(d)) for d in local_distributions(spec.entry_point_group)]
    seen = {normalize(d.metadata["Name"]) for d, _ in local}
    installed: list[importlib.metadata.Distribution] = []
    fetch: list[str] = []
    queue = [req for d, _ in local for req in _requires(d, env)]
    while queue:
        req = queue.pop(0)
        name = normalize(req.name)
        if name in seen or name in spec.exclude:
            continue
        seen.add(name)
        try:
            dist = _pick_distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            dist = None
        if (
            dist is not None
            and req.specifier.contains(dist.version, prereleases=True)
            and _installed_compatible(dist, spec)
        ):
            installed.append(dist)
            queue.extend(_requires(dist, env))
        else:
            # pin to what works here when possible, so the zip matches the local environment
            fetch.append(f"{req.name}=={dist.version}" if dist is not None and req.specifier.contains(dist.version, prereleases=True) else str(req))
    requirements_text = spec.requirements.read_text() if spec.requirements else ""
    return _Inputs(local, installed, fetch, requirements_text)


# ---------------------------------------------------------------------------------------
# pip
# ---------------------------------------------------------------------------------------

_NO_MATCH = re.compile(r"No matching distribution found for ([^\s;]+)")
_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement ([^\s;]+)")


def _pip_install(spec: PackageSpec, requirements: Path | None, pins: list[str], target: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(target)]
    for platform in spec.pip_platforms():
        cmd += ["--platform", platform]
    cmd += [
        "--implementation", "cp",
        "--python-version", spec.python_version,
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ]
    if requirements is not None:
        cmd += ["-r", str(requirements)]
    cmd += pins
    log.info("fetching dependencies with pip", requirements=str(requirements) if requirements else None, pins=pins)
    proc = subprocess.run(
        cmd,
        cwd=str(requirements.parent) if requirements else None,
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_REQUIRE_VIRTUALENV": "0", "PIP_NO_COLOR": "1"},
    )
    if proc.returncode == 0:
        return
    output = proc.stderr + proc.stdout
    match = _NO_MATCH.search(output) or _NO_VERSION.search(output)
    if match:
        package = re.match(r"[A-Za-z0-9._-]+", match[1])[0]
        raise NoCompatibleWheelError(
            f"no wheel of {package!r} fits the function (CPython {spec.python_version}, manylinux "
            f"{spec.machine}, glibc <= {spec.glibc[0]}.{spec.glibc[1]}); Lambda cannot build "
            "source distributions. Pin a version that publishes such a wheel, choose another "
            f"architecture/Python version, or build the wheel yourself and point pip at it "
            "(--find-links DIR in the requirements file).",
            package=package,
        )
    tail = "\n".join(output.strip().splitlines()[-15:])
    raise DependencyInstallError(
        f"pip could not fetch the requirements for the function (exit {proc.returncode}); "
        f"fix the requirements or the network and deploy again. pip said:\n{tail}"
    )


def _pip_dists(target: Path) -> set[str]:
    names = set()
    for info in target.glob("*.dist-info"):
        names.add(normalize(info.name[: -len(".dist-info")].rsplit("-", 1)[0]))
    return names


# ---------------------------------------------------------------------------------------
# zips and the cache
# ---------------------------------------------------------------------------------------


class _PreviousZip:
    """Compressed members of an earlier build, reused when a file did not change.

    Deflating dominates a build (a 50 MB extension module takes seconds); a member whose
    name, size and CRC-32 match is copied as compressed bytes instead. The result is
    byte-identical to compressing again (same headers, same data).
    """

    def __init__(self, path: Path) -> None:
        self.zf = zipfile.ZipFile(path)
        self.fp = open(path, "rb")  # noqa: SIM115 - closed by close()

    def raw(self, name: str, path: Path, size: int) -> tuple[zipfile.ZipInfo, bytes] | None:
        info = self.zf.NameToInfo.get(name)
        if info is None or info.file_size != size or info.compress_type != zipfile.ZIP_DEFLATED:
            return None
        crc = 0
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                crc = zlib.crc32(chunk, crc)
        if crc != info.CRC:
            return None
        self.fp.seek(info.header_offset)
        header = self.fp.read(30)
        if header[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        self.fp.seek(info.header_offset + 30 + name_len + extra_len)
        return info, self.fp.read(info.compress_size)

    def close(self) -> None:
        self.zf.close()
        self.fp.close()


def _latest(cache_dir: Path, filename: str) -> Path | None:
    found = sorted(cache_dir.glob(f"*/{filename}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _write_raw(zf: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> None:
    """Append an already deflated member exactly as ``ZipFile.open(info, "w")`` would."""
    assert zf.fp is not None
    info.flag_bits = 0
    info.header_offset = zf.fp.tell()
    zf.fp.write(info.FileHeader(False))
    zf.fp.write(data)
    zf.filelist.append(info)
    zf.NameToInfo[info.filename] = info
    zf.start_dir = zf.fp.tell()
    zf._didModify = True  # write the central directory on close


def _write_zip(tree: _Tree, dest: Path, previous: Path | None = None) -> Archive:
    tmp = dest.with_suffix(".tmp")
    size = 0
    reuse = _PreviousZip(previous) if previous is not None and previous.exists() else None
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name in tree.names():
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                if name in tree.files:
                    path = tree.files[name]
                    mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    info.external_attr = (0o100000 | mode) << 16
                    file_size = path.stat().st_size
                    size += file_size
                    found = reuse.raw(name, path, file_size) if reuse is not None else None
                    if found is not None:
                        old, data = found
                        info.CRC, info.file_size, info.compress_size = old.CRC, old.file_size, old.compress_size
                        _write_raw(zf, info, data)
                        continue
                    with open(path, "rb") as src, zf.open(info, "w") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                else:
                    info.external_attr = (0o100644) << 16
                    data = tree.generated[name]
                    zf.writestr(info, data)
                    size += len(data)
    finally:
        if reuse is not None:
            reuse.close()
    os.replace(tmp, dest)
    return _archive(dest, size)


def _archive(path: Path, unzipped_size: int) -> Archive:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return Archive(path, base64.b64encode(digest).decode(), path.stat().st_size, unzipped_size)


def _check_size(spec: PackageSpec, function: _Tree, layer: _Tree | None) -> None:
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
    inputs = _resolve(spec)
    spec.cache_dir.mkdir(parents=True, exist_ok=True)

    # user requirements (and dependencies with no usable local wheel) come from pip,
    # cached by what was asked for
    pip_dir: Path | None = None
    if inputs.requirements_text or inputs.fetch:
        pip_key = hashlib.sha256(
            json.dumps(
                [BUILDER_VERSION, spec.python_version, spec.architecture, inputs.requirements_text, inputs.fetch]
            ).encode()
        ).hexdigest()[:24]
        pip_dir = spec.cache_dir / "pip" / pip_key
        if not (pip_dir / ".complete").exists():
            work = Path(tempfile.mkdtemp(prefix="pip-", dir=spec.cache_dir))
            try:
                _pip_install(spec, spec.requirements, inputs.fetch, work)
                if pip_dir.exists():
                    shutil.rmtree(pip_dir)
                pip_dir.parent.mkdir(parents=True, exist_ok=True)
                os.replace(work, pip_dir)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            (pip_dir / ".complete").write_text("ok\n")
    fetched = _pip_dists(pip_dir) if pip_dir else set()

    code = _Tree()
    deps = _Tree()
    names: list[str] = []
    for dist, editable in inputs.local:
        tree = _from_source(dist, spec.entry_point_group) if editable else _from_installed(dist)
        code.merge(tree)
        names.append(f"{dist.metadata['Name']}=={dist.version} ({'source' if editable else 'installed'})")
    for dist in inputs.installed:
        if normalize(dist.metadata["Name"]) in fetched:
            continue  # the user's requirements pinned another version: pip's wins
        deps.merge(_from_installed(dist))
        names.append(f"{dist.metadata['Name']}=={dist.version} (installed wheel)")
    if pip_dir is not None:
        pip_tree = _Tree()
        for path in _walk(pip_dir):
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

    layer_tree: _Tree | None = None
    if spec.layer:
        layer_tree = _Tree()
        layer_tree.merge(deps, prefix="python/")
    else:
        code.merge(deps)
    _check_size(spec, code, layer_tree)

    key = hashlib.sha256(
        json.dumps(
            [BUILDER_VERSION, spec.python_version, spec.architecture, spec.layer, code.digest(),
             layer_tree.digest() if layer_tree else None]
        ).encode()
    ).hexdigest()[:32]
    entry = spec.cache_dir / key
    manifest = entry / "manifest.json"
    if manifest.exists():
        doc = json.loads(manifest.read_text())
        function = _archive_from(doc["function"], entry)
        layer = _archive_from(doc["layer"], entry) if doc.get("layer") else None
        if function is not None and (layer is not None or not doc.get("layer")):
            log.info("deployment package unchanged: reusing the cached build", key=key)
            return BuiltPackage(key, function, layer, tuple(doc["distributions"]), cached=True)
    previous_function = _latest(spec.cache_dir, "function.zip")
    previous_layer = _latest(spec.cache_dir, "layer.zip")
    entry.mkdir(parents=True, exist_ok=True)
    function = _write_zip(code, entry / "function.zip", previous_function)
    layer = _write_zip(layer_tree, entry / "layer.zip", previous_layer) if layer_tree is not None else None
    doc = {
        "function": attrs.asdict(function, value_serializer=_ser),
        "layer": attrs.asdict(layer, value_serializer=_ser) if layer else None,
        "distributions": names,
    }
    manifest.write_text(json.dumps(doc, indent=1))
    log.info("deployment package built", key=key, size=function.size, unzipped=function.unzipped_size)
    return BuiltPackage(key, function, layer, tuple(names), cached=False)


def _ser(inst: Any, field: Any, value: Any) -> Any:
    return value.name if isinstance(value, Path) else value


def _archive_from(doc: Mapping[str, Any], entry: Path) -> Archive | None:
    path = entry / doc["path"]
    if not path.exists() or path.stat().st_size != doc["size"]:
        return None
    return Archive(path, doc["code_sha256"], doc["size"], doc["unzipped_size"])
