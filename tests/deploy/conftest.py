"""Fixtures of the deploy tests: one moto server, one local stack and one build cache per
session; a fresh session (and uniquely named resources) per test."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lambdarun.deploy.plugin as deploy_plugin
import lambdarun.plugins
from lambdarun import hookimpl
from lambdarun.deploy.package import PackageSpec, build_package
from lambdarun.local.testing import local_stack_fixture, moto_server_fixture

local_stack = local_stack_fixture(scope="session", max_concurrency=4)

_ids = itertools.count()
RUN = os.urandom(3).hex()


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same moto process) uses."""
    return f"{prefix}-{RUN}-{next(_ids)}"


def plugins(*extra: Any) -> list[Any]:
    """The deploy plugin (until it is a default plugin) plus ``extra``."""
    out: list[Any] = list(extra)
    if "lambdarun.deploy.plugin" not in lambdarun.plugins.DEFAULT_PLUGINS:
        out.append(deploy_plugin)
    return out


@pytest.fixture(scope="session")
def aws_credentials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``[aws]`` settings with dummy credentials from a file of their own: sessions never
    see the developer's real credentials, and the process environment is left alone."""
    path = tmp_path_factory.mktemp("aws") / "credentials"
    path.write_text("[lambdarun-tests]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    return {"profile": "lambdarun-tests", "credentials_file": str(path)}


#: moto's ThreadedMotoServer on 127.0.0.1 (a free port): IAM, S3, DynamoDB, STS, Lambda
moto_url = moto_server_fixture(scope="session")
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build cache for the session: the zip is built once and reused by every deploy."""
    return tmp_path_factory.mktemp("deploy-cache")


@pytest.fixture(scope="session")
def built(cache_dir: Path) -> Any:
    """The default deployment package (lambdarun + installed plugins), built once."""
    return build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir))


@pytest.fixture
def aws_session(
    lambdarun_session: Callable[..., Any], moto_url: str, cache_dir: Path, built: Any, aws_credentials: dict[str, str]
) -> Callable[..., Any]:
    """``aws_session(**overrides)``: a Session on target ``aws`` pointed at moto, with a fresh
    function/bucket/table name unless the overrides give them."""

    def make(*extra_plugins: Any, deploy: dict[str, Any] | None = None, **overrides: Any) -> Any:
        bucket = unique("bkt")
        opts: dict[str, Any] = {
            "target": "aws",
            "region": "us-east-1",
            "function_name": unique("fn"),
            "storage_url": f"s3://{bucket}/lambdarun",
            "progress": False,
            **overrides,
        }
        opts = {k: v for k, v in opts.items() if v is not None}  # None: leave the default
        opts["aws"] = {"endpoint_url": moto_url, **aws_credentials, **overrides.get("aws", {})}
        opts["deploy"] = {"cache_dir": str(cache_dir), "python_version": "3.11", **(deploy or {})}
        return lambdarun_session(*plugins(*extra_plugins), overrides=opts)

    return make


@pytest.fixture
def boto(moto_url: str) -> Callable[[str], Any]:
    """``boto("iam")``: an admin client on the moto server, to look at what deploy did."""
    import boto3

    clients: dict[str, Any] = {}

    def client(service: str, region: str = "us-east-1") -> Any:
        key = f"{service}/{region}"
        if key not in clients:
            clients[key] = boto3.client(
                service,
                endpoint_url=moto_url,
                region_name=region,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return clients[key]

    return client


class LocalTargetOnStack:
    """Test plugin: target ``local`` is the session's test stack (not an embedded one)."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    @hookimpl(tryfirst=True)
    def lambdarun_make_target(self, name: str, settings: Any) -> Any:
        if name != "local":
            return None
        from lambdarun.local.plugin import LocalTarget

        return LocalTarget(settings, stack=self.stack)


@pytest.fixture
def local_session(lambdarun_session: Callable[..., Any], local_stack: Any, cache_dir: Path, built: Any) -> Callable[..., Any]:
    """``local_session(**overrides)``: a Session on target ``local`` (the test stack)."""
    import lambdarun.local.plugin

    def make(*extra_plugins: Any, deploy: dict[str, Any] | None = None, **overrides: Any) -> Any:
        extra: list[Any] = [LocalTargetOnStack(local_stack), *extra_plugins]
        if "lambdarun.local.plugin" not in lambdarun.plugins.DEFAULT_PLUGINS:
            extra.append(lambdarun.local.plugin)
        bucket = unique("lbkt")
        opts: dict[str, Any] = {
            "target": "local",
            "function_name": unique("lfn"),
            "storage_url": f"s3://{bucket}/lambdarun",
            "progress": False,
            **overrides,
        }
        opts["deploy"] = {"cache_dir": str(cache_dir), "python_version": "3.11", **(deploy or {})}
        return lambdarun_session(*plugins(*extra), overrides=opts)

    return make


def make_wheel(directory: Path, name: str, version: str, files: dict[str, str], tag: str = "py3-none-any") -> Path:
    """Write a minimal, valid wheel (so requirement tests need no network)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(record) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dist}-{version}-{tag}.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name_, text in contents.items():
            zf.writestr(name_, text)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def durable_tables() -> Any:
    """The durable plugin's deploy contribution (its checkpoint table, named by ``[deploy]
    table`` or a ``dynamodb://`` store URL): the plugin that owns the table's key schema."""
    return pytest.importorskip("lambdarun_durable.deploy")


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    return unique


@pytest.fixture
def wheel_factory() -> Callable[..., Path]:
    return make_wheel
