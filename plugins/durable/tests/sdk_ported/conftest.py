# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/test/conftest.py), Apache-2.0.
# Changed: the imports, the runner mode read from DURABLE_RUNNER_MODE instead of a CLI option,
# deserialize_operation_payload moved to sdk_helpers.py, the X-Ray fixtures left out.
"""Pytest configuration and fixtures for durable execution tests."""

import contextlib
import json
import logging
import os
import sys
import time
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from lambdarun_durable.testing import (
    DurableFunctionCloudTestRunner,
    DurableFunctionTestResult,
    DurableFunctionTestRunner,
)

from lambdarun_durable.lambda_service import (
    ErrorObject,
    OperationPayload,
)
from lambdarun_durable.serdes import ExtendedTypeSerDes


# Add this folder (its src/ package) to the Python path for imports
examples_root = Path(__file__).parent
if str(examples_root) not in sys.path:
    sys.path.insert(0, str(examples_root))

from sdk_helpers import deserialize_operation_payload  # noqa: E402,F401 - AWS's conftest defines it here


logger = logging.getLogger(__name__)


class RunnerMode(StrEnum):
    """Runner mode for local or cloud execution."""

    LOCAL = "local"
    CLOUD = "cloud"


def pytest_configure(config):
    config.addinivalue_line("markers", "example: an AWS SDK example test")
    config.addinivalue_line("markers", "durable_execution(handler, lambda_function_name): the handler under test")


def _runner_mode(request) -> str:
    # AWS's conftest reads --runner-mode; a conftest below the rootdir cannot add options,
    # so the mode comes from the environment here (default: local)
    return os.environ.get("DURABLE_RUNNER_MODE", RunnerMode.LOCAL)


class TestRunnerAdapter:
    """Adapter that provides consistent interface for both local and cloud runners.

    This adapter encapsulates the differences between local and cloud test runners:
    - Local runner: Requires context manager for resource cleanup (scheduler thread)
    - Cloud runner: No resource cleanup needed (stateless boto3 client)

    The adapter ensures proper resource management while providing a unified interface.
    """

    def __init__(
        self,
        runner: DurableFunctionTestRunner | DurableFunctionCloudTestRunner,
        mode: str,
    ):
        """Initialize the adapter."""
        self._runner: DurableFunctionTestRunner | DurableFunctionCloudTestRunner = (
            runner
        )
        self._mode: str = mode

    def run(
        self,
        input: str | None = None,  # noqa: A002
        timeout: int = 60,
    ) -> DurableFunctionTestResult:
        """Execute the durable function and return results.

        The caller's ``timeout`` is the execution deadline. Local runs
        pass it as ``execution_timeout``; cloud runs pass it as the
        runner's ``timeout``.
        """
        if isinstance(self._runner, DurableFunctionTestRunner):
            return self._runner.run(input=input, execution_timeout=timeout)
        return self._runner.run(input=input, timeout=timeout)

    def run_async(
        self,
        input: str | None = None,  # noqa: A002
        timeout: int = 60,
    ) -> str:
        if isinstance(self._runner, DurableFunctionTestRunner):
            return self._runner.run_async(input=input, execution_timeout=timeout)
        return self._runner.run_async(input=input, timeout=timeout)

    def send_callback_success(
        self, callback_id: str, result: bytes | None = None
    ) -> None:
        self._runner.send_callback_success(callback_id=callback_id, result=result)

    def send_callback_failure(
        self, callback_id: str, error: ErrorObject | None = None
    ) -> None:
        self._runner.send_callback_failure(callback_id=callback_id, error=error)

    def send_callback_heartbeat(self, callback_id: str) -> None:
        self._runner.send_callback_heartbeat(callback_id=callback_id)

    def wait_for_result(
        self, execution_arn: str, timeout: int = 60
    ) -> DurableFunctionTestResult:
        return self._runner.wait_for_result(
            execution_arn=execution_arn, timeout=timeout
        )

    def wait_for_callback(
        self, execution_arn: str, name: str | None = None, timeout: int = 60
    ) -> str:
        return self._runner.wait_for_callback(
            execution_arn=execution_arn, name=name, timeout=timeout
        )

    @property
    def mode(self) -> str:
        """Get the runner mode (local or cloud)."""
        return self._mode

    def __enter__(self):
        """Context manager entry - only calls runner's __enter__ if it's a context manager."""
        if isinstance(self._runner, contextlib.AbstractContextManager):
            self._runner.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        """Context manager exit - only calls runner's __exit__ if it's a context manager."""
        if isinstance(self._runner, contextlib.AbstractContextManager):
            return self._runner.__exit__(exc_type, exc_val, exc_tb)
        return None


@pytest.fixture
def durable_runner(request):
    """Pytest fixture that provides a test runner based on configuration.

    Configuration for cloud mode:
        Environment variables (required):
            AWS_REGION: AWS region for Lambda invocation (default: us-west-2)
            LAMBDA_ENDPOINT: Optional Lambda endpoint URL
            PYTEST_FUNCTION_NAME_MAP: JSON mapping of example names to deployed function names

        CLI option:
            --runner-mode=cloud (or local, default: local)

        Example:
            AWS_REGION=us-west-2 \
            LAMBDA_ENDPOINT=https://lambda.us-west-2.amazonaws.com \
            PYTEST_FUNCTION_NAME_MAP='{"hello world":"HelloWorld:$LATEST"}' \
            pytest --runner-mode=cloud -k test_hello_world

    Usage in tests:
        @pytest.mark.durable_execution(
            handler=hello_world.handler,
            lambda_function_name="hello world"
        )
        def test_hello_world(durable_runner):
            with durable_runner:
                result = durable_runner.run(input="test", timeout=10)
            assert result.status == InvocationStatus.SUCCEEDED
    """
    # Get marker with test configuration
    marker = request.node.get_closest_marker("durable_execution")
    if not marker:
        pytest.fail("Test must be marked with @pytest.mark.durable_execution")

    handler: Any = marker.kwargs.get("handler")
    lambda_function_name: str | None = marker.kwargs.get("lambda_function_name")

    # Get runner mode from CLI option
    runner_mode: str = _runner_mode(request)

    logger.info("Running test in %s mode", runner_mode.upper())

    # Create appropriate runner
    if runner_mode == RunnerMode.CLOUD:
        # Get deployed function name and AWS config from environment
        deployed_name = _get_deployed_function_name(request, lambda_function_name)
        region = os.environ.get("AWS_REGION", "us-west-2")
        lambda_endpoint = os.environ.get("LAMBDA_ENDPOINT") or None

        logger.info("Using AWS region: %s", region)

        # Create cloud runner (no cleanup needed)
        runner = DurableFunctionCloudTestRunner(
            function_name=deployed_name,
            region=region,
            lambda_endpoint=lambda_endpoint,
        )
    else:
        if not handler:
            pytest.fail("handler is required for local mode tests")
        skip_time = marker.kwargs.get("skip_time", True)
        # Create local runner (needs cleanup via context manager)
        runner = DurableFunctionTestRunner(
            handler=handler, execution_timeout=60, skip_time=skip_time
        )

    # Wrap in adapter and use context manager for proper cleanup
    with TestRunnerAdapter(runner, runner_mode) as adapter:
        yield adapter


def _get_deployed_function_name(
    request: pytest.FixtureRequest,
    lambda_function_name: str | None,
) -> str:
    """Get the deployed function name from environment variables.

    Required environment variables:
    - PYTEST_FUNCTION_NAME_MAP: JSON mapping of test names to qualified function names

    Tests are skipped if the test's lambda_function_name is not present in the
    configured mapping.
    """
    if not lambda_function_name:
        pytest.fail("lambda_function_name is required for cloud mode tests")

    function_map_json = os.environ.get("PYTEST_FUNCTION_NAME_MAP")
    if not function_map_json:
        pytest.fail(
            "Cloud mode requires PYTEST_FUNCTION_NAME_MAP environment variable\n"
            'Example: PYTEST_FUNCTION_NAME_MAP=\'{"Hello World":"HelloWorld:$LATEST"}\' pytest --runner-mode=cloud'
        )

    try:
        function_map = json.loads(function_map_json)
    except json.JSONDecodeError as exc:
        pytest.fail(f"Invalid PYTEST_FUNCTION_NAME_MAP JSON: {exc}")

    normalized_name = lambda_function_name.lower()
    for configured_name, configured_function in function_map.items():
        if configured_name.lower() == normalized_name:
            logger.info(
                "Using function ARN: %s for lambda function: %s",
                configured_function,
                configured_name,
            )
            return configured_function

    pytest.skip(
        f"Test '{lambda_function_name}' is not present in PYTEST_FUNCTION_NAME_MAP"
    )


