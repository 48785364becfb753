"""Drop-in parity with ``temporalio.contrib.aws.lambda_worker`` beyond its own unit tests
(those are ported in ``reference_ported/``): a workflow in the handler's own module, against
the real dev server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from lambdarun_temporal import testing

HERE = Path(__file__).resolve().parent

INVOKE = """
import json, sys
from lambdarun_temporal.testing import FakeLambdaContext
import handler_module
try:
    out = {"result": handler_module.lambda_handler({}, FakeLambdaContext(timeout=float(sys.argv[1])))}
except Exception as exc:
    out = {"error_type": type(exc).__name__, "error": str(exc)}
print(json.dumps(out), flush=True)
"""


def invoke_handler_module(env: dict[str, str], cwd: Path, timeout: float) -> dict:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path])
    proc = subprocess.run(
        [sys.executable, "-c", INVOKE, str(timeout)],
        env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout + 60,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"rc={proc.returncode}\nstdout={proc.stdout}\nstderr={proc.stderr}"
    out = json.loads(lines[-1])
    out["returncode"], out["log"] = proc.returncode, proc.stdout + proc.stderr
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("with_toml", [False, True], ids=["env-only", "temporal.toml-in-cwd"])
def test_workflow_in_the_handler_module_runs(temporal_server, task_queue, tmp_path, with_toml):
    """The sandbox re-imports the handler module (and so calls run_worker) for every
    workflow run; that must neither fail the workflow task nor read config files there."""
    env = {"TEMPORAL_TASK_QUEUE": task_queue}
    if with_toml:
        (tmp_path / "temporal.toml").write_text(
            f'[profile.default]\naddress = "{temporal_server.address}"\nnamespace = "default"\n'
        )
    else:
        env["TEMPORAL_ADDRESS"] = temporal_server.address
    ids = testing.start_workflows(temporal_server.address, task_queue, "GreetInModule", ["a", "b", "c"])
    out = invoke_handler_module(env, tmp_path, timeout=20)
    assert out["returncode"] == 0, out["log"]
    assert "error_type" not in out, out["log"]
    assert "RestrictedWorkflowAccessError" not in out["log"]
    assert out["result"]["stop_reason"] == "idle", out
    assert testing.workflow_results(temporal_server.address, ids) == ["Hello, a!", "Hello, b!", "Hello, c!"]


def test_config_is_a_dataclass_usable_with_dataclasses():
    import dataclasses

    from lambdarun_temporal.lambda_worker import LambdaWorkerConfig

    names = [f.name for f in dataclasses.fields(LambdaWorkerConfig)]
    # the reference's fields first, in its order, then ours
    assert names[:4] == ["client_connect_config", "worker_config", "shutdown_deadline_buffer", "shutdown_hooks"]
    config = LambdaWorkerConfig()
    config.worker_config["task_queue"] = "q"
    copy = dataclasses.replace(config, idle_timeout=None, shutdown_deadline_buffer=timedelta(seconds=3))
    assert copy.idle_timeout is None and copy.shutdown_deadline_buffer == timedelta(seconds=3)
    assert copy.worker_config["task_queue"] == "q" and config.idle_timeout == timedelta(seconds=1)
    assert dataclasses.asdict(LambdaWorkerConfig())["shutdown_hooks"] == []


def test_errors_have_the_reference_types_and_messages(monkeypatch):
    from temporalio.common import WorkerDeploymentVersion

    from lambdarun_temporal.errors import LambdaTimeoutTooShortError, LambdaWorkerConfigError
    from lambdarun_temporal.lambda_worker import run_worker
    from lambdarun_temporal.testing import FakeLambdaContext

    monkeypatch.delenv("TEMPORAL_TASK_QUEUE", raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    with pytest.raises(ValueError, match=r"^version is required \(deployment_name and build_id must be set\)$"):
        run_worker(WorkerDeploymentVersion(deployment_name="d", build_id=""), lambda c: None)
    handler = run_worker(WorkerDeploymentVersion(deployment_name="d", build_id="b"), lambda c: None)
    with pytest.raises(LambdaWorkerConfigError) as info:
        handler({}, FakeLambdaContext(timeout=30))
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (
        'task queue not configured: set worker_config["task_queue"] or the '
        "TEMPORAL_TASK_QUEUE environment variable"
    )

    def pinned(config):
        config.worker_config["task_queue"] = "q"
        config.shutdown_deadline_buffer = timedelta(milliseconds=1500)

    handler = run_worker(WorkerDeploymentVersion(deployment_name="d", build_id="b"), pinned)
    with pytest.raises(LambdaTimeoutTooShortError) as too_short:
        handler({}, FakeLambdaContext(timeout=2))
    assert isinstance(too_short.value, RuntimeError) and not isinstance(too_short.value, ValueError)
    assert str(too_short.value).startswith(
        "Lambda timeout is too short: 2.0s remaining but 1.5s is reserved for shutdown, leaving "
        "no time for work. Increase the function timeout or decrease the shutdown deadline buffer"
    )


def test_short_timeout_warning_is_a_stdlib_logging_record(monkeypatch, caplog, capsys, listener):
    """'less than 5s' is a WARNING record of the reference's stdlib logger
    (``temporalio.contrib.aws.lambda_worker._run_worker``), not a line printed to stdout."""
    import logging

    from temporalio.common import WorkerDeploymentVersion

    from lambdarun_temporal.errors import TemporalConnectError
    from lambdarun_temporal.lambda_worker import run_worker
    from lambdarun_temporal.testing import FakeLambdaContext

    monkeypatch.setenv("TEMPORAL_ADDRESS", listener.address)  # accepts, never answers

    def configure(config):
        config.worker_config["task_queue"] = "q"
        config.shutdown_deadline_buffer = timedelta(milliseconds=500)
        config.connect_timeout = timedelta(milliseconds=300)

    handler = run_worker(WorkerDeploymentVersion(deployment_name="d", build_id="b"), configure)
    with caplog.at_level(logging.WARNING, logger="temporalio.contrib.aws.lambda_worker"):
        with pytest.raises(TemporalConnectError):
            handler({}, FakeLambdaContext(timeout=3))
    warnings = [r for r in caplog.records if "less than 5s" in r.getMessage()]
    assert len(warnings) == 1
    record = warnings[0]
    # the reference's logger name: logging configured for the reference applies unchanged
    assert record.name == "temporalio.contrib.aws.lambda_worker._run_worker"
    assert record.pathname.endswith("lambdarun_temporal/lambda_worker/_run_worker.py")
    assert record.levelno == logging.WARNING
    assert "work_time=" in record.getMessage() and "shutdown_buffer=0:00:00.500000" in record.getMessage()
    assert "less than 5s" not in capsys.readouterr().out


def test_run_worker_inside_the_sandbox_reads_no_config(monkeypatch, tmp_path):
    """In the sandbox's re-import run_worker checks the version only: a config file that
    would fail at cold start is not even looked at, and the handler refuses to run."""
    import temporalio.workflow
    from temporalio.common import WorkerDeploymentVersion

    from lambdarun_temporal.errors import LambdaWorkerConfigError
    from lambdarun_temporal.lambda_worker import run_worker

    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "missing.toml"))
    version = WorkerDeploymentVersion(deployment_name="d", build_id="b")
    with pytest.raises(LambdaWorkerConfigError, match="missing.toml does not exist"):
        run_worker(version, lambda c: None)  # outside the sandbox: read at cold start
    monkeypatch.setattr(temporalio.workflow.unsafe, "in_sandbox", lambda: True)
    handler = run_worker(version, lambda c: None)
    with pytest.raises(RuntimeError, match="inside the Temporal workflow sandbox"):
        handler({}, None)
    with pytest.raises(ValueError, match="version is required"):
        run_worker(WorkerDeploymentVersion(deployment_name="", build_id="b"), lambda c: None)


def test_every_public_name_of_the_reference_exists_here_with_its_signature():
    """Compared with the installed reference itself, not with a list written here."""
    import dataclasses
    import inspect

    import temporalio.contrib.aws.lambda_worker as reference
    import temporalio.contrib.aws.lambda_worker.otel as reference_otel

    import lambdarun_temporal.lambda_worker as ours
    import lambdarun_temporal.lambda_worker.otel as ours_otel

    for ref_module, our_module in ((reference, ours), (reference_otel, ours_otel)):
        public = getattr(ref_module, "__all__", None) or [
            n for n, v in vars(ref_module).items()
            if not n.startswith("_") and getattr(v, "__module__", "") == ref_module.__name__
        ]
        assert public, ref_module
        for name in public:
            ref_obj, our_obj = getattr(ref_module, name), getattr(our_module, name)
            if dataclasses.is_dataclass(ref_obj):
                ref_fields = [f.name for f in dataclasses.fields(ref_obj)]
                assert [f.name for f in dataclasses.fields(our_obj)][: len(ref_fields)] == ref_fields, name
            elif callable(ref_obj):
                ref_params = list(inspect.signature(ref_obj).parameters)
                assert list(inspect.signature(our_obj).parameters)[: len(ref_params)] == ref_params, name
