"""DurableFunctionCloudTestRunner pointed at the local target (AWS's cloud runner: no function
registration; a chained invoke runs in the deployed function it names, started by the
service), and the durable backend's registration refusing the API path with what to do."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

import lambdarun_durable.plugin
from lambdarun.errors import ConfigError
from lambdarun.local.testing import local_stack_fixture, make_zip
from lambdarun_durable.lambda_service import OperationStatus, OperationType
from lambdarun_durable.testing import DurableFunctionCloudTestRunner, InvokeOperation

pytestmark = pytest.mark.timeout(120)

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

EXAMPLES = Path(__file__).parent / "aws_examples"
ROLE = "arn:aws:iam::123456789012:role/x"


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


def deploy(lam: Any, example: str, env: dict[str, str] | None = None) -> str:
    name = f"cr-{example.replace('_', '-')[:30]}-{uuid.uuid4().hex[:6]}"
    lam.create_function(
        FunctionName=name, Runtime="python3.11", Role=ROLE, Handler=f"{example}.handler", Timeout=60,
        Code={"ZipFile": make_zip({f"{example}.py": (EXAMPLES / f"{example}.py").read_bytes()})},
        Environment={"Variables": env or {}}, DurableConfig={"ExecutionTimeout": 600})
    return name


@pytest.mark.parametrize("durable_target", [True, False])
def test_cloud_runner_on_the_local_target_runs_chained_invokes(lam, durable_target):
    if durable_target:
        target = f"{deploy(lam, 'step')}:$LATEST"
        expected = 8
    else:
        target = f"plain-{uuid.uuid4().hex[:6]}"
        lam.create_function(FunctionName=target, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip(
                                {"app.py": "def handler(event, context):\n    return {'doubled': event['n'] * 2}\n"})})
        expected = {"doubled": 42}
    parent = deploy(lam, "invoke_basic", {"TARGET_FUNCTION_NAME": target})
    runner = DurableFunctionCloudTestRunner(f"{parent}:$LATEST", lambda_client=lam, poll_interval=0.1)
    with runner:
        result = runner.run({"n": 21}, timeout=60)
    assert result.status.value == "SUCCEEDED", result.error
    assert json.loads(result.result) == expected
    (invoke,) = [op for op in result.get_all_operations() if isinstance(op, InvokeOperation)]
    assert invoke.operation_type is OperationType.CHAINED_INVOKE and invoke.status is OperationStatus.SUCCEEDED
    assert json.loads(invoke.result) == expected


def test_registering_a_function_on_the_api_path_says_what_to_do(lambdarun_session: Callable[..., Any],
                                                                 local_stack: Any, tmp_path: Any) -> None:
    session = lambdarun_session(lambdarun_durable.plugin, overrides={
        "target": "local", "progress": False, "local": {"state_dir": str(local_stack.state_dir)},
        "durable": {"store_url": f"sqlite:///{tmp_path}/d.db"},  # api: auto -> the local service's API
    })
    backend = session.backend("durable")
    assert backend.uses_api
    with pytest.raises(ConfigError, match="durable.api = 'orchestrator'") as info:
        backend.register_durable_function("pricing-fn", lambda event, ctx: 1)
    assert "Create 'pricing-fn' on the target" in str(info.value)
