"""The ``local`` target plugin: config section, LocalTarget, ensure_function, storage."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun.local.plugin as local_plugin
from lambdarun.local.plugin import LocalTarget, stop_embedded_stacks
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session
from lambdarun.types import FunctionSpec, Target

pytestmark = pytest.mark.timeout(60)

#: register the local plugin unless the core already lists it among its built-ins
EXTRA_PLUGINS = [] if "lambdarun.local.plugin" in DEFAULT_PLUGINS else [local_plugin]


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    """A session whose target is an embedded stack in a private state dir (stopped after)."""
    code = tmp_path / "project"
    code.mkdir()
    (code / "handlers.py").write_text(
        "import os\n"
        "def handler(event, context):\n"
        "    return {'event': event, 'cwd': os.getcwd(), 'flag': os.environ.get('FLAG')}\n"
    )
    monkeypatch.chdir(code)
    pm = make_plugin_manager(plugins=EXTRA_PLUGINS, load_entrypoints=False)
    s = Session(pm, overrides={"target": "local", "local": {"state_dir": str(tmp_path / "state"),
                                                            "idle_timeout": 30.0}})
    try:
        yield s
    finally:
        s.close()
        stop_embedded_stacks()


def test_local_target_satisfies_the_protocol(session: Session) -> None:
    target = session.target
    assert isinstance(target, LocalTarget) and isinstance(target, Target)
    assert target.name == "local"
    assert target.endpoint_url("lambda").startswith("http://127.0.0.1:")
    assert target.endpoint_url("s3") == target.endpoint_url("dynamodb") != target.endpoint_url("lambda")
    env = target.environment()
    assert env["AWS_ENDPOINT_URL_LAMBDA"] == target.endpoint_url("lambda")
    assert env["AWS_ENDPOINT_URL_S3"] == target.endpoint_url("s3")


def test_ensure_function_runs_code_from_the_current_directory(session: Session, tmp_path: Path) -> None:
    target = session.target
    spec = FunctionSpec(name="from-cwd", handler="handlers.handler", timeout=30, memory_size=256,
                        environment={"FLAG": "on"}, reserved_concurrency=3)
    assert target.ensure_function(spec) == "from-cwd"
    lam = target.client("lambda")
    out = json.loads(lam.invoke(FunctionName="from-cwd", Payload=b'{"a": 1}')["Payload"].read())
    assert out == {"event": {"a": 1}, "cwd": str((tmp_path / "project").resolve()), "flag": "on"}
    cfg = lam.get_function(FunctionName="from-cwd")
    assert cfg["Configuration"]["Timeout"] == 30 and cfg["Concurrency"]["ReservedConcurrentExecutions"] == 3
    # idempotent, and a changed spec updates the function
    target.ensure_function(spec)
    target.ensure_function(FunctionSpec(name="from-cwd", handler="handlers.handler", timeout=60))
    cfg = lam.get_function(FunctionName="from-cwd")
    assert cfg["Configuration"]["Timeout"] == 60 and "Concurrency" not in cfg


def test_default_storage_url_is_a_moto_bucket(session: Session) -> None:
    target = session.target
    assert target.default_storage_url() == "s3://lambdarun-local/lambdarun"
    assert target.default_storage_url() == "s3://lambdarun-local/lambdarun"  # bucket exists: fine
    names = [b["Name"] for b in target.client("s3").list_buckets()["Buckets"]]
    assert "lambdarun-local" in names


_REGION_PROBE = """
import json, sys
from lambdarun.local import plugin as local_plugin
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session
extra = [] if "lambdarun.local.plugin" in DEFAULT_PLUGINS else [local_plugin]
s = Session(make_plugin_manager(plugins=extra, load_entrypoints=False),
            overrides={"target": "local", "region": sys.argv[1], "local": {"state_dir": sys.argv[2]}})
try:
    target = s.target
    s3 = target.client("s3")
    url = target.default_storage_url()
    storage = s.storage(url)
    storage.put("probe", b"x" * 300_000)
    custom = [target.ensure_storage("s3://my-own-bucket/prefix"), target.ensure_storage("s3://my-own-bucket")]
    print(json.dumps({
        "url": url,
        "default_location": s3.get_bucket_location(Bucket="lambdarun-local")["LocationConstraint"],
        "roundtrip": storage.get("probe") == b"x" * 300_000,
        "custom": custom,
        "custom_location": s3.get_bucket_location(Bucket="my-own-bucket")["LocationConstraint"],
        "aws_region": target.environment()["AWS_REGION"],
    }))
finally:
    s.close()
    local_plugin.stop_embedded_stacks()
"""


@pytest.mark.parametrize("region", ["eu-west-1", "ap-southeast-2"])
def test_storage_works_in_any_region(region: str, tmp_path: Path) -> None:
    """S3 refuses a bucket outside us-east-1 without its LocationConstraint (moto too): the
    local target's buckets are created in the session's region. A fresh process, as a user's
    would be (moto's state is per process)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _REGION_PROBE, region, str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "url": "s3://lambdarun-local/lambdarun",
        "default_location": region,
        "roundtrip": True,
        "custom": ["s3://my-own-bucket/prefix", "s3://my-own-bucket"],
        "custom_location": region,
        "aws_region": region,
    }


def test_local_target_on_a_given_stack(local_stack: Any, session: Session) -> None:
    target = LocalTarget(session.settings, stack=local_stack)
    assert target.endpoint_url("lambda") == local_stack.endpoints.lambda_
    target.close()
    assert local_stack.running  # the caller's stack is left alone


def test_sessions_reuse_the_fixture_stack(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDARUN_LOCAL__STATE_DIR", str(local_stack.state_dir))
    pm = make_plugin_manager(plugins=EXTRA_PLUGINS, load_entrypoints=False)
    s = Session(pm, overrides={"target": "local"})
    try:
        assert s.target.endpoint_url("lambda") == local_stack.endpoints.lambda_
        assert not s.target.stack.owned  # attached to the fixture's stack, started nothing
    finally:
        s.close()
        stop_embedded_stacks()
    assert local_stack.running


def test_local_target_inside_a_function_uses_the_stack_running_it(local_stack: Any, lam: Any,
                                                                   tmp_path: Path) -> None:
    local_stack.client("s3").create_bucket(Bucket="seen-from-inside")
    # a local-directory function (as LocalTarget.ensure_function makes): it imports this
    # environment's packages; a zip would need lambdarun vendored in it
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        import lambdarun.local.plugin as local_plugin
        from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
        from lambdarun.session import Session

        def handler(event, context):
            extra = [] if "lambdarun.local.plugin" in DEFAULT_PLUGINS else [local_plugin]
            pm = make_plugin_manager(plugins=extra, load_entrypoints=False)
            session = Session(pm, overrides={"target": "local"})
            target = session.target
            buckets = [b["Name"] for b in target.client("s3").list_buckets()["Buckets"]]
            return {"owned": target.stack.owned, "buckets": buckets,
                    "lambda": target.endpoint_url("lambda")}
    """))
    name = "inside-uses-running-stack"
    lam.create_function(
        FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
        Handler="app.handler", Code={"S3Bucket": "__local__", "S3Key": str(tmp_path)},
        Timeout=30, MemorySize=1024,
        # the same lambdarun as this test process (not another copy installed in the venv)
        Environment={"Variables": {"PYTHONPATH": str(Path(lambdarun.__file__).parent.parent)}},
    )
    try:
        out = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    finally:
        lam.delete_function(FunctionName=name)
    assert out["owned"] is False
    assert "seen-from-inside" in out["buckets"]
    assert out["lambda"] == local_stack.endpoints.lambda_


def test_concurrency_limit_is_visible(session: Session, local_stack: Any) -> None:
    # the stack admits an AWS account's concurrency (lambdarun.limits.ACCOUNT_CONCURRENCY);
    # a caller keeps at most 4 x CPUs in flight, since every function runs on this machine
    from lambdarun.local.plugin import CALLER_CONCURRENCY

    assert session.target.stack.concurrency_limit == 1000
    assert session.target.concurrency_limit == min(1000, CALLER_CONCURRENCY)
    assert LocalTarget(session.settings, stack=local_stack).concurrency_limit == 8  # conftest: 8


def test_embedded_stack_replaces_a_shared_stack_that_went_down(tmp_path: Path) -> None:
    from lambdarun.local import LocalStack
    from lambdarun.local.plugin import LocalConfig, embedded_stack

    shared = LocalStack(tmp_path, shared=True, reuse=False, stop_at_exit=False).start()
    config = LocalConfig(state_dir=str(tmp_path))
    try:
        first = embedded_stack(config, "us-east-1")
        assert not first.owned and first.endpoints == shared.endpoints
        shared.stop()
        second = embedded_stack(config, "us-east-1")
        assert second is not first and second.alive()  # started its own
    finally:
        shared.stop()
        stop_embedded_stacks()
