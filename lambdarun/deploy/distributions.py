"""Which distributions go into the deployment package and where they come from: lambdarun
and the plugin distributions (from their source tree when editable, else from their
``RECORD``), their dependencies resolved for the function's platform (an installed wheel
whose tags fit is copied, anything else fetched), and pip fetching wheels for the platform."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from lambdarun.deploy.errors import DependencyInstallError, DeployError, NoCompatibleWheelError
from lambdarun.deploy.ziptree import SKIP_SUFFIXES, FileTree

if TYPE_CHECKING:
    from lambdarun.deploy.package import PackageSpec

__all__ = [
    "normalize",
    "wheel_tag_compatible",
    "local_distributions",
    "from_source",
    "from_installed",
    "Inputs",
    "resolve",
    "pip_install",
    "pip_distributions",
]

log = structlog.get_logger(__name__)


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()



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


def from_source(dist: importlib.metadata.Distribution, group: str) -> FileTree:
    """An editable distribution: its packages from the source tree plus a fresh dist-info."""
    tree = FileTree()
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


def from_installed(dist: importlib.metadata.Distribution) -> FileTree:
    """A distribution installed from a wheel: the files its RECORD lists."""
    tree = FileTree()
    for rel in dist.files or ():
        name = rel.as_posix()
        if name.startswith("..") or "__pycache__" in name or name.endswith(SKIP_SUFFIXES):
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
class Inputs:
    local: list[tuple[importlib.metadata.Distribution, bool]]  # (dist, editable)
    installed: list[importlib.metadata.Distribution]
    fetch: list[str]
    requirements_text: str


def resolve(spec: PackageSpec) -> Inputs:
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
    return Inputs(local, installed, fetch, requirements_text)


# ---------------------------------------------------------------------------------------
# pip
# ---------------------------------------------------------------------------------------

_NO_MATCH = re.compile(r"No matching distribution found for ([^\s;]+)")
_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement ([^\s;]+)")


def pip_install(spec: PackageSpec, requirements: Path | None, pins: list[str], target: Path) -> None:
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


def pip_distributions(target: Path) -> set[str]:
    names = set()
    for info in target.glob("*.dist-info"):
        names.add(normalize(info.name[: -len(".dist-info")].rsplit("-", 1)[0]))
    return names


# ---------------------------------------------------------------------------------------
# zips and the cache
# ---------------------------------------------------------------------------------------

