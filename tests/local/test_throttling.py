"""Throttling like an AWS account's: account concurrency (AWS default 1,000) shared by the
functions without reserved concurrency, reserved concurrency taken out of it, per-function
scaling (new environments per 10 s), and 429 ``TooManyRequestsException`` with botocore's
``ThrottleReason`` values beyond them.

AWS docs: "Understanding Lambda function scaling",
https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html; "Lambda scaling behavior",
https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html; "Invoke" (errors:
TooManyRequestsException, 429), https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lambdarun.limits import ACCOUNT_CONCURRENCY
from lambdarun.local.testing import create_function, local_stack_fixture

default_stack = local_stack_fixture(scope="module")
small_stack = local_stack_fixture(scope="module", max_concurrency=3, scaling_rate=2)

HOLD = """
import json, os, time
def handler(event, context):
    open(os.path.join(event["dir"], "running-" + context.aws_request_id), "w").close()
    deadline = time.time() + 20
    while not os.path.exists(os.path.join(event["dir"], "go")) and time.time() < deadline:
        time.sleep(0.01)
    return os.getpid()
"""


def wait_running(directory: Path, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(list(directory.glob("running-*"))) < n:
        assert time.monotonic() < deadline, f"{n} invocations did not start"
        time.sleep(0.01)


@pytest.mark.timeout(180)
def test_a_100_way_fan_out_of_1s_calls_all_succeed_with_default_settings(default_stack: Any) -> None:
    lam = default_stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=120,
                               max_pool_connections=100)
    assert default_stack.concurrency_limit == ACCOUNT_CONCURRENCY
    create_function(lam, "fan", """
        import os, time
        def handler(event, context):
            time.sleep(1)
            return [event["i"], os.getpid()]
    """, timeout=60)

    def call(i: int) -> Any:
        r = lam.invoke(FunctionName="fan", Payload=json.dumps({"i": i}))
        assert "FunctionError" not in r, r["Payload"].read()
        return json.loads(r["Payload"].read())

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(call, range(100)))  # no retries: a 429 fails the test
    assert [i for i, _ in results] == list(range(100))
    lam.delete_function(FunctionName="fan")


@pytest.mark.timeout(120)
def test_account_concurrency_and_reserved_share_it(small_stack: Any, tmp_path: Path) -> None:
    """Account concurrency 3: a function reserving 1 leaves 2 to the others."""
    lam = small_stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=60)
    for name in ("reserved", "open"):
        create_function(lam, name, HOLD, timeout=30)
    lam.put_function_concurrency(FunctionName="reserved", ReservedConcurrentExecutions=1)
    event = json.dumps({"dir": str(tmp_path)})
    threads = [threading.Thread(target=lam.invoke, kwargs={"FunctionName": "open", "Payload": event})
               for _ in range(2)]
    try:
        for t in threads:
            t.start()
        wait_running(tmp_path, 2)
        # the unreserved pool (3 - 1) is full: throttled although the account has a free slot
        with pytest.raises(lam.exceptions.TooManyRequestsException) as err:
            lam.invoke(FunctionName="open", Payload=event)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert err.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
        assert err.value.response["Error"]["Message"] == "Rate Exceeded."
        # ... which is the reserved function's
        reserved = threading.Thread(target=lam.invoke, kwargs={"FunctionName": "reserved", "Payload": event})
        reserved.start()
        threads.append(reserved)
        wait_running(tmp_path, 3)
        with pytest.raises(lam.exceptions.TooManyRequestsException) as err:
            lam.invoke(FunctionName="reserved", Payload=event)
        assert err.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    finally:
        (tmp_path / "go").touch()
        for t in threads:
            t.join()
        for name in ("reserved", "open"):
            lam.delete_function(FunctionName=name)


@pytest.mark.timeout(120)
def test_scaling_rate_limits_new_environments_not_warm_ones(small_stack: Any, tmp_path: Path) -> None:
    """Scaling rate 2 per 10 s: a third new environment within the interval is refused,
    while the warm environments serve any number of calls."""
    lam = small_stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=60)
    create_function(lam, "burst", HOLD, timeout=30)
    (tmp_path / "go").touch()
    event = json.dumps({"dir": str(tmp_path)})
    try:
        pids = set()
        for _ in range(5):  # one warm environment serves them all
            pids.add(json.loads(lam.invoke(FunctionName="burst", Payload=event)["Payload"].read()))
        assert len(pids) == 1
        (tmp_path / "go").unlink()
        held = [threading.Thread(target=lam.invoke, kwargs={"FunctionName": "burst", "Payload": event})
                for _ in range(2)]
        for t in held:
            t.start()
        wait_running(tmp_path, 7)  # 5 done + 2 holding: the second needed a new environment
        # a third concurrent call needs a third environment: the rate (2 per 10 s) is spent
        with pytest.raises(lam.exceptions.TooManyRequestsException) as err:
            lam.invoke(FunctionName="burst", Payload=event)
        assert err.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
    finally:
        (tmp_path / "go").touch()
        for t in locals().get("held", []):
            t.join()
        lam.delete_function(FunctionName="burst")


@pytest.mark.parametrize(("local", "message"), [
    ({"scaling_rate": 0}, r"local.scaling_rate = 0 .*must be greater than 0"),
    ({"scaling_rate": -5}, r"local.scaling_rate = -5 .*must be greater than 0"),
    ({"max_concurrency": -1}, r"local.max_concurrency = -1 .*must be 0 or more"),
    ({"scaling_rate": "lots"}, r"local.scaling_rate = 'lots' .*expected an integer"),
])
def test_bad_throttling_settings_are_config_errors(local: dict[str, Any], message: str, tmp_path: Path) -> None:
    import lambdarun.local.plugin as local_plugin
    from lambdarun.errors import ConfigError
    from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
    from lambdarun.session import Session

    extra = [] if "lambdarun.local.plugin" in DEFAULT_PLUGINS else [local_plugin]
    with pytest.raises(ConfigError, match=message):
        Session(make_plugin_manager(plugins=extra, load_entrypoints=False),
                overrides={"target": "local", "local": {"state_dir": str(tmp_path), **local}})


def test_account_limits_for_get_account_settings(small_stack: Any) -> None:
    """The figures GetAccountSettings reports (AccountLimit.ConcurrentExecutions and
    UnreservedConcurrentExecutions, https://docs.aws.amazon.com/lambda/latest/api/API_AccountLimit.html)
    come from lambdarun.local.throttle.account_limits."""
    from lambdarun.local.throttle import account_limits

    service = small_stack.service
    lam = small_stack.client("lambda")
    create_function(lam, "limits", HOLD)
    try:
        lam.put_function_concurrency(FunctionName="limits", ReservedConcurrentExecutions=2)
        figures = account_limits(service.options.concurrency_limit, service.registry.functions.values())
        assert figures == {"ConcurrentExecutions": 3, "UnreservedConcurrentExecutions": 1}
    finally:
        lam.delete_function(FunctionName="limits")
    figures = account_limits(service.options.concurrency_limit, service.registry.functions.values())
    assert figures == {"ConcurrentExecutions": 3, "UnreservedConcurrentExecutions": 3}
