"""The deployment package: contents, platform wheels, determinism, cache, isolation."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lambdarun.deploy import PackageSpec, build_package
from lambdarun.deploy.package import wheel_tag_compatible

SPEC_311 = PackageSpec(python_version="3.11", cache_dir="/nonexistent")
SPEC_312_ARM = PackageSpec(python_version="3.12", architecture="arm64", cache_dir="/nonexistent")


@pytest.mark.parametrize(
    ("tag", "x86_311", "arm_312"),
    [
        ("py3-none-any", True, True),
        ("py2.py3-none-any", True, True),
        ("cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", True, False),
        ("cp311-cp311-manylinux2014_x86_64", True, False),
        ("cp311-cp311-manylinux_2_28_x86_64", False, False),  # newer glibc than Amazon Linux 2
        ("cp312-cp312-manylinux_2_28_aarch64", False, True),  # AL2023 has glibc 2.34
        ("cp310-abi3-manylinux_2_17_x86_64", True, False),
        ("cp311-cp311-musllinux_1_1_x86_64", False, False),
        ("cp311-cp311-win_amd64", False, False),
        ("cp311-cp311-macosx_11_0_arm64", False, False),
        ("cp310-cp310-manylinux2014_x86_64", False, False),
    ],
)
def test_wheel_tags(tag, x86_311, arm_312):
    assert wheel_tag_compatible(tag, SPEC_311) is x86_311
    assert wheel_tag_compatible(tag, SPEC_312_ARM) is arm_312


def test_package_holds_lambdarun_plugins_and_their_dependencies(built):
    names = set(zipfile.ZipFile(built.function.path).namelist())
    assert "lambdarun/runtime.py" in names
    assert "lambdarun-0.1.0.dist-info/METADATA" in names
    # every installed plugin distribution, with its entry points so discovery works in Lambda
    import importlib.metadata

    for ep in importlib.metadata.entry_points(group="lambdarun"):
        top = ep.module.split(".")[0]
        assert f"{top}/__init__.py" in names
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt") and n.startswith(top))
        assert f"{ep.name} = {ep.value}" in zipfile.ZipFile(built.function.path).read(info).decode()
    for dep in ("pluggy", "attrs", "cloudpickle", "msgpack", "structlog"):
        assert f"{dep}/__init__.py" in names
    # the Lambda runtime provides boto3; nothing compiled for the wrong platform
    assert not any(n.startswith(("boto3/", "botocore/")) for n in names)
    assert not any(n.endswith(".pyc") or "__pycache__" in n for n in names)
    assert all(".cpython-311-x86_64-linux-gnu.so" in n or not n.endswith(".so") or "abi3" in n for n in names)


def test_builds_are_cached_and_deterministic(built, cache_dir, tmp_path):
    from lambdarun.deploy.ziptree import FileTree as _Tree
    from lambdarun.deploy.ziptree import write_zip as _write_zip

    first = build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir))
    again = build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir))
    assert again.cached and again.key == first.key
    assert again.function.code_sha256 == first.function.code_sha256
    # the same files give the same bytes (so CodeSha256 says whether the function is current)
    tree = _Tree()
    (tmp_path / "a.py").write_text("A = 1\n")
    tree.add_file("pkg/a.py", tmp_path / "a.py")
    tree.add_bytes("pkg/__init__.py", b"")
    one, two = _write_zip(tree, tmp_path / "one.zip"), _write_zip(tree, tmp_path / "two.zip")
    assert one.code_sha256 == two.code_sha256 and (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    info = zipfile.ZipFile(built.function.path).infolist()
    assert [i.filename for i in info] == sorted(i.filename for i in info)
    assert {i.date_time for i in info} == {(1980, 1, 1, 0, 0, 0)}


def test_user_code_and_requirements_from_a_local_wheelhouse(tmp_path, cache_dir, wheel_factory):
    wheels = tmp_path / "wheels"
    wheel_factory(wheels, "tinydep", "1.2", {"tinydep/__init__.py": "VALUE = 42\n"})
    req = tmp_path / "requirements.txt"
    req.write_text(f"--no-index\n--find-links {wheels}\ntinydep==1.2\n")
    app = tmp_path / "myapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "tasks.py").write_text("def f(x):\n    return x + 1\n")
    package = build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir, requirements=req, include=(app,)))
    names = set(zipfile.ZipFile(package.function.path).namelist())
    assert {"tinydep/__init__.py", "tinydep-1.2.dist-info/METADATA", "myapp/tasks.py"} <= names
    assert "tinydep (pip)" in package.distributions
    # pip's result is cached too: the same inputs build nothing
    assert build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir, requirements=req, include=(app,))).cached


def _runtime_dir(tmp_path: Path) -> Path:
    """What the Lambda image provides besides the zip: boto3 and its dependencies."""
    import importlib.util

    runtime = tmp_path / "runtime"
    runtime.mkdir()
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"):
        spec = importlib.util.find_spec(name)
        origin = Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else Path(spec.origin)
        os.symlink(origin, runtime / origin.name)
    return runtime


def test_the_zip_alone_loads_lambdarun_and_every_plugin(built, tmp_path):
    """Run the extracted zip in an isolated interpreter (-I -S: no site-packages, no PYTHON*
    variables): everything the handler needs comes from the zip (boto3 from the 'runtime')."""
    task_root = tmp_path / "task"
    zipfile.ZipFile(built.function.path).extractall(task_root)
    runtime = _runtime_dir(tmp_path)
    code = (
        "import sys, importlib.metadata;"
        f"sys.path[:0] = [{str(task_root)!r}, {str(runtime)!r}];"
        "import lambdarun.runtime, msgpack, attrs, cloudpickle;"
        "from lambdarun.plugins import make_plugin_manager;"
        "pm = make_plugin_manager(environ={});"
        "print(lambdarun.runtime.__file__);"
        "print(sorted(ep.name for ep in importlib.metadata.entry_points(group='lambdarun')));"
        "print(sorted(n for n, p in pm.list_name_plugin() if p is not None and n not in pm.builtin));"
        "print([m.__file__ for m in (msgpack, attrs, cloudpickle)])"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(task_root))
    import importlib.metadata

    installed = sorted(ep.name for ep in importlib.metadata.entry_points(group="lambdarun"))
    assert eval(lines[1]) == installed
    assert all(f.startswith(str(task_root)) for f in eval(lines[3]))


@pytest.mark.network
@pytest.mark.timeout(120)
def test_one_small_requirement_from_pypi_with_the_platform_options(tmp_path, cache_dir):
    """The only test that downloads: pip's --platform/--python-version/--only-binary against
    the real index, for one tiny pure-Python wheel."""
    req = tmp_path / "requirements.txt"
    req.write_text("iniconfig==2.0.0\n")
    package = build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir, requirements=req))
    names = set(zipfile.ZipFile(package.function.path).namelist())
    assert "iniconfig/__init__.py" in names and "iniconfig-2.0.0.dist-info/METADATA" in names


def test_unchanged_members_are_reused_byte_for_byte(tmp_path):
    from lambdarun.deploy.ziptree import FileTree as _Tree
    from lambdarun.deploy.ziptree import write_zip as _write_zip

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.py").write_text("DATA = %r\n" % ("x" * 100_000))
    (src / "small.py").write_text("A = 1\n")
    tree = _Tree()
    tree.add_tree(src, "pkg/")
    tree.add_bytes("pkg/__init__.py", b"")
    first = _write_zip(tree, tmp_path / "first.zip")
    (src / "small.py").write_text("A = 2\n")
    reused = _write_zip(tree, tmp_path / "reused.zip", previous=tmp_path / "first.zip")
    fresh = _write_zip(tree, tmp_path / "fresh.zip")
    assert (tmp_path / "reused.zip").read_bytes() == (tmp_path / "fresh.zip").read_bytes()
    assert reused.code_sha256 == fresh.code_sha256 != first.code_sha256
    with zipfile.ZipFile(tmp_path / "reused.zip") as zf:
        assert zf.testzip() is None
        assert zf.read("pkg/small.py") == b"A = 2\n" and zf.read("pkg/big.py").startswith(b"DATA = 'xxx")
