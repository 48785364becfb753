"""Invoke through boto3: payloads, context, logs, error shapes, lifecycle."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.timeout(60)

CONTEXT = """
import os, json
def handler(event, context):
    return {
        "event": event,
        "pid": os.getpid(),
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "remaining": context.get_remaining_time_in_millis(),
        "memory": context.memory_limit_in_mb,
        "function_name": context.function_name,
        "version": context.function_version,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "custom": context.client_context.custom if context.client_context else None,
        "env": {k: os.environ.get(k) for k in (
            "AWS_LAMBDA_FUNCTION_NAME", "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_REGION",
            "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
            "AWS_LAMBDA_RUNTIME_API", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_LAMBDA", "MY_VAR")},
        "cwd": os.getcwd(),
    }
"""


def payload(resp: dict[str, Any]) -> Any:
    return json.loads(resp["Payload"].read())


def test_sync_invoke_gets_the_real_lambda_context(lam: Any, make_function: Any, local_stack: Any) -> None:
    name = make_function(CONTEXT, timeout=30, memory_size=256, environment={"MY_VAR": "x"})
    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"n": 1}), ClientContext=cc)
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in resp
    out = payload(resp)
    assert out["event"] == {"n": 1}
    assert out["request_id"] == resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert out["arn"].endswith(f":function:{name}")
    assert 25_000 < out["remaining"] <= 30_000
    assert out["memory"] == "256"
    assert (out["function_name"], out["version"]) == (name, "$LATEST")
    assert out["log_group"] == f"/aws/lambda/{name}"
    assert out["log_stream"].endswith("]" + out["log_stream"].split("]")[-1])
    assert out["custom"] == {"k": "v"}
    env = out["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name and env["_HANDLER"] == "app.handler"
    assert env["LAMBDA_TASK_ROOT"] == out["cwd"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256" and env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
    # the stack's own credentials are the function's runtime credentials (as Lambda injects
    # the role's), and they are not among its visible Environment.Variables
    assert env["AWS_ACCESS_KEY_ID"] == local_stack.credentials.access_key_id
    assert env["AWS_SECRET_ACCESS_KEY"] == local_stack.credentials.secret_access_key
    assert env["AWS_SESSION_TOKEN"] is None
    variables = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    assert "AWS_ACCESS_KEY_ID" not in variables and "AWS_SECRET_ACCESS_KEY" not in variables
    assert env["AWS_ENDPOINT_URL_S3"] == env["AWS_ENDPOINT_URL_DYNAMODB"] == local_stack.endpoints.moto
    assert env["AWS_ENDPOINT_URL_LAMBDA"] == local_stack.endpoints.lambda_
    assert env["MY_VAR"] == "x"


def test_handler_reaches_moto_with_plain_boto3(lam: Any, make_function: Any, local_stack: Any) -> None:
    local_stack.client("s3").create_bucket(Bucket="from-handler")
    name = make_function("""
        import boto3
        s3 = boto3.client("s3")
        def handler(event, context):
            s3.put_object(Bucket="from-handler", Key="k", Body=b"written in lambda")
            return "ok"
    """, timeout=30)
    assert payload(lam.invoke(FunctionName=name)) == "ok"
    body = local_stack.client("s3").get_object(Bucket="from-handler", Key="k")["Body"].read()
    assert body == b"written in lambda"


def test_cold_then_warm(lam: Any, make_function: Any) -> None:
    name = make_function(CONTEXT)
    first = lam.invoke(FunctionName=name, LogType="Tail")
    second = lam.invoke(FunctionName=name, LogType="Tail")
    assert payload(first)["pid"] == payload(second)["pid"]
    log1 = base64.b64decode(first["LogResult"]).decode()
    log2 = base64.b64decode(second["LogResult"]).decode()
    assert "Init Duration:" in log1
    assert "Init Duration:" not in log2
    assert "REPORT RequestId:" in log2 and "Billed Duration:" in log2


def test_log_tail_has_start_output_end_report(lam: Any, make_function: Any) -> None:
    name = make_function("""
        import logging
        logging.getLogger().setLevel(logging.INFO)
        def handler(event, context):
            print("printed " + "x" * 10)
            logging.info("logged")
            return None
    """)
    resp = lam.invoke(FunctionName=name, LogType="Tail")
    text = base64.b64decode(resp["LogResult"]).decode()
    lines = text.splitlines()
    rid = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert lines[0] == f"START RequestId: {rid} Version: $LATEST"
    assert "printed xxxxxxxxxx" in text and "logged" in text
    assert f"END RequestId: {rid}" in lines
    assert lines[-1].startswith(f"REPORT RequestId: {rid}\tDuration: ")
    assert payload(resp) is None


def test_log_tail_is_the_last_4kb(lam: Any, make_function: Any) -> None:
    name = make_function("""
        def handler(event, context):
            for i in range(500):
                print("line %04d" % i + "." * 40)
    """)
    resp = lam.invoke(FunctionName=name, LogType="Tail")
    tail = base64.b64decode(resp["LogResult"])
    assert len(tail) == 4096
    assert tail.decode().splitlines()[-1].startswith("REPORT")
    # and without LogType there is no LogResult
    assert "LogResult" not in lam.invoke(FunctionName=name)


def test_logs_are_written_to_the_log_directory(lam: Any, make_function: Any, local_stack: Any) -> None:
    name = make_function("def handler(e, c):\n    print('to the log dir')\n")
    lam.invoke(FunctionName=name)
    logs = list((local_stack.run_dir / "logs" / name).glob("*.log"))
    text = "".join(p.read_text() for p in logs)
    assert "to the log dir" in text and "START RequestId" in text and "REPORT RequestId" in text


def test_unhandled_error_shape(lam: Any, make_function: Any) -> None:
    name = make_function("""
        class Boom(Exception):
            pass
        def handler(event, context):
            raise Boom("it broke")
    """)
    resp = lam.invoke(FunctionName=name)
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    err = payload(resp)
    assert set(err) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert (err["errorMessage"], err["errorType"]) == ("it broke", "Boom")
    assert err["requestId"] == resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert any("raise Boom" in frame for frame in err["stackTrace"])


def test_timeout_kills_the_environment(lam: Any, make_function: Any) -> None:
    name = make_function("""
        import os, time
        def handler(event, context):
            if event.get("sleep"):
                time.sleep(event["sleep"])
            return os.getpid()
    """, timeout=1)
    before = payload(lam.invoke(FunctionName=name))
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 5}), LogType="Tail")
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    err = payload(resp)
    assert err["errorType"] == "Sandbox.Timedout"
    assert err["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert "Task timed out after 1.00 seconds" in base64.b64decode(resp["LogResult"]).decode()
    after = payload(lam.invoke(FunctionName=name))
    assert after != before  # the timed-out environment was killed; a new one serves


def test_exit_is_runtime_exit_error(lam: Any, make_function: Any) -> None:
    name = make_function("""
        import os
        def handler(event, context):
            os._exit(3)
    """)
    resp = lam.invoke(FunctionName=name)
    assert resp["FunctionError"] == "Unhandled"
    err = payload(resp)
    assert err["errorType"] == "Runtime.ExitError"
    assert err["errorMessage"].endswith("Runtime exited with error: exit status 3")


def test_crash_by_signal_is_runtime_exit_error(lam: Any, make_function: Any) -> None:
    name = make_function("""
        import os, signal
        def handler(event, context):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    err = payload(lam.invoke(FunctionName=name))
    assert err["errorType"] == "Runtime.ExitError"
    assert err["errorMessage"].endswith("Runtime exited with error: signal: killed")


def test_import_failure_is_an_init_error(lam: Any, make_function: Any) -> None:
    name = make_function("import not_a_module_anywhere\ndef handler(e, c):\n    return 1\n")
    resp = lam.invoke(FunctionName=name)
    assert resp["FunctionError"] == "Unhandled"
    err = payload(resp)
    assert err["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'app'" in err["errorMessage"]


def test_missing_handler_is_an_init_error(lam: Any, make_function: Any) -> None:
    name = make_function("def other(e, c):\n    return 1\n")
    err = payload(lam.invoke(FunctionName=name))
    assert err["errorType"] == "Runtime.HandlerNotFound"


def test_memory_limit(lam: Any, make_function: Any) -> None:
    name = make_function("""
        def handler(event, context):
            block = bytearray(2 * 1024 ** 3)
            return len(block)
    """, memory_size=128)
    resp = lam.invoke(FunctionName=name)
    assert resp["FunctionError"] == "Unhandled"
    # AWS kills the environment (no MemoryError): see tests/local/test_memory.py
    assert payload(resp)["errorType"] == "Runtime.OutOfMemory"


def test_dry_run(lam: Any, make_function: Any) -> None:
    name = make_function(CONTEXT)
    resp = lam.invoke(FunctionName=name, InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    assert resp["Payload"].read() == b""


def test_request_too_large_sync(lam: Any, make_function: Any) -> None:
    name = make_function(CONTEXT)
    big = json.dumps("x" * 6_291_456)
    # real Lambda answers with this code, which boto3 does not model: a plain ClientError
    with pytest.raises(ClientError) as err:
        lam.invoke(FunctionName=name, Payload=big)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert err.value.response["Error"]["Code"] == "RequestEntityTooLargeException"


def test_request_too_large_async(lam: Any, make_function: Any) -> None:
    name = make_function(CONTEXT)
    just_over = json.dumps("x" * 1_048_576)
    with pytest.raises(ClientError) as err:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=just_over)
    assert err.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    # the same payload is fine synchronously
    assert lam.invoke(FunctionName=name, Payload=just_over)["StatusCode"] == 200


def test_invalid_json_payload(lam: Any, make_function: Any) -> None:
    name = make_function(CONTEXT)
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, Payload=b"not json")


def wait_file(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


BLOCKING = """
import os, time
def handler(event, context):
    open(os.path.join(event["dir"], f"running-{os.getpid()}"), "w").close()
    deadline = time.time() + 20
    while not os.path.exists(os.path.join(event["dir"], event["release"])) and time.time() < deadline:
        time.sleep(0.01)
    return os.getpid()
"""


def test_throttled_when_reserved_concurrency_is_reached(lam: Any, make_function: Any, tmp_path: Path) -> None:
    name = make_function(BLOCKING, timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    event = json.dumps({"dir": str(tmp_path), "release": "go"})
    results: list[Any] = []
    holder = threading.Thread(target=lambda: results.append(payload(lam.invoke(FunctionName=name, Payload=event))))
    holder.start()
    deadline = time.monotonic() + 20
    while not list(tmp_path.glob("running-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        with pytest.raises(lam.exceptions.TooManyRequestsException) as err:
            lam.invoke(FunctionName=name, Payload=event)
    finally:
        (tmp_path / "go").touch()
        holder.join()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert err.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert len(results) == 1 and isinstance(results[0], int)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName=name, Payload=event)


def test_scale_out_runs_in_separate_processes(lam: Any, make_function: Any, tmp_path: Path) -> None:
    name = make_function(BLOCKING, timeout=30)
    event = json.dumps({"dir": str(tmp_path), "release": "go"})
    pids: list[int] = []
    threads = [threading.Thread(target=lambda: pids.append(payload(lam.invoke(FunctionName=name, Payload=event))))
               for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(list(tmp_path.glob("running-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()  # all three were running at once, each in its own process
    for t in threads:
        t.join()
    assert len(set(pids)) == 3


def test_response_too_large(lam: Any, make_function: Any) -> None:
    name = make_function("def handler(e, c):\n    return 'x' * 6_300_000\n", memory_size=512)
    resp = lam.invoke(FunctionName=name)
    assert resp["FunctionError"] == "Unhandled"
    assert payload(resp)["errorType"] == "Function.ResponseSizeTooLarge"
    # the function keeps working afterwards
    lam.update_function_code(FunctionName=name, ZipFile=__import__("lambdarun.local.testing", fromlist=["x"])
                             .make_zip({"app.py": "def handler(e, c):\n    return 'small'\n"}))
    assert payload(lam.invoke(FunctionName=name)) == "small"


def test_processes_started_by_a_crashed_handler_are_killed(lam: Any, make_function: Any) -> None:
    name = make_function("""
        import os, subprocess
        def handler(event, context):
            child = subprocess.Popen(["sleep", "60"])
            with open(event["pidfile"], "w") as f:
                f.write(str(child.pid))
            os._exit(1)
    """)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        pidfile = Path(d) / "child"
        err = payload(lam.invoke(FunctionName=name, Payload=json.dumps({"pidfile": str(pidfile)})))
        assert err["errorType"] == "Runtime.ExitError"
        child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            break
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the handler's child outlived its environment")


def test_logs_reach_cloudwatch_logs_in_moto(lam: Any, make_function: Any, local_stack: Any) -> None:
    name = make_function("def handler(e, c):\n    print('shipped to cloudwatch')\n")
    request_id = lam.invoke(FunctionName=name)["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    logs = local_stack.client("logs")
    messages: list[str] = []
    deadline = time.monotonic() + 10
    while not any("REPORT" in m for m in messages) and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except logs.exceptions.ResourceNotFoundException:
            continue
        messages = [e["message"] for e in events]
    assert f"START RequestId: {request_id} Version: $LATEST" in messages
    assert "shipped to cloudwatch" in messages
    assert any(m.startswith(f"REPORT RequestId: {request_id}") for m in messages)


def test_threaded_handler_fits_a_small_memory_size(lam: Any, make_function: Any) -> None:
    name = make_function("""
        from concurrent.futures import ThreadPoolExecutor
        import boto3
        def handler(event, context):
            with ThreadPoolExecutor(32) as pool:
                return sum(pool.map(lambda i: len(bytearray(1024 * 1024)), range(64)))
    """, memory_size=128, timeout=30)
    resp = lam.invoke(FunctionName=name)
    assert "FunctionError" not in resp, resp["Payload"].read()
    assert payload(resp) == 64 * 1024 * 1024
