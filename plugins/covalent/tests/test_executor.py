"""AWSLambdaExecutor: the Covalent executor interface, on the real local target."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid

import cloudpickle
import pytest

from lambdarun.errors import ConfigError, TaskTimeoutError
from lambdarun_covalent import awslambda
from lambdarun_covalent.config import ORIGINAL_DEFAULTS
from lambdarun_covalent.executor import (
    _EXECUTOR_PLUGIN_DEFAULTS,
    EXECUTOR_PLUGIN_NAME,
    AWSLambdaExecutor,
    ExecutorTaskCancelledError,
    covalent_config_file,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

META = {"dispatch_id": "dispatch-1", "node_id": 0, "results_dir": "/tmp"}


class NodeError(RuntimeError):
    pass


def add(a, b):
    print(f"adding {a} and {b}")
    return a + b


def broken():
    print("doomed", file=sys.stderr)
    raise NodeError("node failed")


def nap(seconds):
    time.sleep(seconds)
    return seconds


def token():
    return uuid.uuid4().hex


@pytest.fixture
def no_covalent_config(tmp_path, monkeypatch):
    """Point Covalent's config dir at an empty directory (never the developer's own)."""
    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(tmp_path / "covalent"))
    return tmp_path / "covalent" / "covalent.conf"


@pytest.fixture
def executor(session, no_covalent_config):
    return AWSLambdaExecutor(session=session, function_name="lambdarun-covalent-tests")


def test_module_is_a_covalent_executor_plugin():
    assert EXECUTOR_PLUGIN_NAME == "AWSLambdaExecutor"
    assert getattr(awslambda, EXECUTOR_PLUGIN_NAME) is AWSLambdaExecutor
    assert AWSLambdaExecutor.__module__.rsplit(".", 1)[-1] == "awslambda"  # Covalent's short name
    assert _EXECUTOR_PLUGIN_DEFAULTS == ORIGINAL_DEFAULTS == {
        "function_name": "covalent-awslambda-executor",
        "s3_bucket_name": "covalent-lambda-job-resources",
        "credentials_file": "",
        "profile": "",
        "region": "",
        "execution_role": "CovalentLambdaExecutionRole",
        "poll_freq": 5.0,
        "timeout": 900.0,
    }


def test_base_class_follows_covalent_availability():
    if awslambda.COVALENT_AVAILABLE:
        from covalent.executor.base import AsyncBaseExecutor

        assert issubclass(AWSLambdaExecutor, AsyncBaseExecutor)
    else:
        assert issubclass(AWSLambdaExecutor, awslambda._StandaloneExecutor)


STANDALONE = """
import asyncio, json, sys
sys.modules["covalent"] = None  # as if Covalent were not installed
from lambdarun_covalent.executor import AWSLambdaExecutor, COVALENT_AVAILABLE
from lambdarun_covalent import awslambda
assert not COVALENT_AVAILABLE
assert AWSLambdaExecutor.__mro__[1] is awslambda._StandaloneExecutor
ex = AWSLambdaExecutor(timeout=5, retries=0, keep_objects=False)
data = json.loads(json.dumps(ex.to_dict()))
assert data["short_name"] == "awslambda" and data["attributes"]["timeout"] == 5
again = AWSLambdaExecutor().from_dict(data)
assert again.settings() == ex.settings()
assert asyncio.run(again.get_cancel_requested()) is False
print("standalone ok")
"""


def test_module_imports_and_works_without_covalent(tmp_path):
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDARUN_")}
    env["LAMBDARUN_DISABLE_PLUGIN_AUTOLOAD"] = "0"
    env["COVALENT_CONFIG_DIR"] = str(tmp_path / "no-covalent")
    done = subprocess.run(
        [sys.executable, "-c", STANDALONE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "standalone ok" in done.stdout


def test_original_defaults_and_constructor(plain_session, no_covalent_config):
    session = plain_session
    ex = AWSLambdaExecutor(session=session)
    assert ex.function_name == "covalent-awslambda-executor"
    assert ex.s3_bucket_name == "covalent-lambda-job-resources"
    assert (ex.poll_freq, ex.timeout, ex.execution_role) == (5.0, 900.0, "CovalentLambdaExecutionRole")
    ex = AWSLambdaExecutor("fn", "bucket", "/creds", "prof", "eu-west-1", "role", 1, 30, session=session)
    assert (ex.function_name, ex.s3_bucket_name, ex.credentials_file, ex.profile) == ("fn", "bucket", "/creds", "prof")
    assert (ex.region, ex.execution_role, ex.poll_freq, ex.timeout) == ("eu-west-1", "role", 1, 30)


def test_values_from_covalent_config_file_zero_and_false_are_values(make_session, no_covalent_config):
    no_covalent_config.parent.mkdir(parents=True)
    no_covalent_config.write_text(
        "[executors.awslambda]\n"
        'function_name = "from-covalent"\n'
        "timeout = 42\n"
        "retries = 0\n"
        "keep_objects = false\n"
        "async_threshold = 0\n"
    )
    assert covalent_config_file() == no_covalent_config
    # lambdarun config that is *set* wins over Covalent's file; 0/False there are real values
    session = make_session(retries=2, keep_objects=True)
    ex = AWSLambdaExecutor(session=session)
    assert ex.timeout == 42
    assert ex.async_threshold == 0
    assert ex.retries == 2 and ex.keep_objects is True
    # ... but the fixture's function_name is set in lambdarun config too
    assert ex.function_name == "lambdarun-covalent-tests"
    # and the constructor wins over both, 0 and False included
    ex = AWSLambdaExecutor(session=session, retries=0, keep_objects=False, timeout=1)
    assert (ex.retries, ex.keep_objects, ex.timeout) == (0, False, 1)


def test_invalid_value_is_a_config_error(session, no_covalent_config):
    with pytest.raises(ConfigError, match="inline_limit"):
        AWSLambdaExecutor(session=session, inline_limit=7_000_000)
    with pytest.raises(ConfigError, match="timeout"):
        AWSLambdaExecutor(session=session, timeout=1000)


@pytest.mark.parametrize("bucket", ["s3://bucket", "Upper_Case", "a", "dots..dots", "192.168.0.1", "../../etc", "b/prefix"])
def test_bad_bucket_name_is_a_config_error_up_front(session, no_covalent_config, bucket):
    """Not an S3 error inside the first large task, and nothing created."""
    with pytest.raises(ConfigError, match="s3_bucket_name .*must be an S3 bucket name"):
        AWSLambdaExecutor(session=session, s3_bucket_name=bucket)


def test_to_dict_from_dict_round_trip_is_json(executor, session):
    data = executor.to_dict()
    assert data["short_name"] == "awslambda"
    text = json.dumps(data)  # Covalent stores executors as JSON
    assert "_session" not in text
    rebuilt = AWSLambdaExecutor(session=session).from_dict(json.loads(text))
    assert rebuilt.settings() == executor.settings()
    assert rebuilt.run_sync(add, [1, 2], {}, META) == 3


def test_run_sync_and_status(executor):
    assert executor.run_sync(add, [2, 3], {}, META) == 5
    assert executor.get_status_sync() == "COMPLETED"
    assert executor.job_handle()["task_id"] == executor._job_handle["task_id"]


def test_async_execute_returns_result_streams_and_status(executor):
    result, stdout, stderr, status = asyncio.run(executor.execute(add, [1, 1], {}, "d", "/tmp", 3))
    assert (result, stdout, stderr) == (2, "adding 1 and 1\n", "")
    assert str(status) == "COMPLETED"


def test_exception_keeps_its_type_in_plain_code(executor):
    with pytest.raises(NodeError, match="node failed") as info:
        executor.run_sync(broken, [], {}, META)
    assert "NodeError: node failed" in info.value.remote_traceback


def test_task_failure_reaches_covalent_as_its_own_executors_report_it(executor):
    """Covalent's dask/local executors print the task's output, then its traceback, to the
    task's streams and raise TaskRuntimeError (the node ends FAILED with stdout/stderr)."""
    import io

    from covalent._shared_files.exceptions import TaskRuntimeError

    executor._task_stdout, executor._task_stderr = io.StringIO(), io.StringIO()
    with pytest.raises(TaskRuntimeError) as info:
        asyncio.run(executor.run(broken, [], {}, META))
    stderr = executor.task_stderr.getvalue()
    assert stderr.startswith("doomed\nTraceback (most recent call last):\n")
    assert stderr.rstrip().endswith("NodeError: node failed")
    assert ", in broken\n" in stderr  # the remote frames
    assert str(info.value) in stderr


@pytest.mark.parametrize(
    ("argument", "meant"), [("memory_size", "memory"), ("functon_name", "function_name"), ("nonsense_key", None)]
)
def test_unknown_constructor_argument_is_a_type_error(session, no_covalent_config, argument, meant):
    """The original raises TypeError for an argument it does not take; a silently ignored
    setting (memory_size=512 running with 1024 MB) is worse."""
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{argument}'") as info:
        AWSLambdaExecutor(session=session, **{argument: 512})
    if meant:
        assert f"did you mean '{meant}'" in str(info.value)
    # Covalent's own base-class keywords are still accepted
    ex = AWSLambdaExecutor(session=session, log_stdout="out.log", cache_dir="/tmp/x", time_limit=5)
    assert (ex.log_stdout, ex.cache_dir, ex.time_limit) == ("out.log", "/tmp/x", 5)
