"""In-process test runner (like ``aws_durable_execution_sdk_python_testing``) with time skipping.

    from lambdarun_durable.testing import DurableFunctionTestRunner

    with DurableFunctionTestRunner(handler=my_handler) as runner:
        result = runner.run(input={"order_id": "o1"})
        assert result.status is InvocationStatus.SUCCEEDED
        assert result.result_value == {...}

Waits and retry delays take no wall time: the runner's clock jumps to the next due
time. Callback deadlines are different: the runner first gives the test
``callback_grace`` real seconds to answer (``send_callback_*``); with
``callback_grace=None`` it never skips to a callback deadline by itself and time only
moves through :meth:`advance_time`.

AWS's testing package holds its public API under one import path; so does this package,
so a test ports by changing its imports only. By concept: :mod:`.runner` (the in-process
runners and their virtual clock), :mod:`.cloud` (the cloud runner, over the Lambda API),
:mod:`.results` (the result model: operations, invocations, the test result),
:mod:`.exceptions`.
"""

from __future__ import annotations

# the SDK's model names, importable from here as they were from the single module
from lambdarun_durable.lambda_service import ErrorObject, InvocationStatus, OperationStatus, OperationType
from lambdarun_durable.testing.cloud import DurableFunctionCloudTestRunner, callback_id_from_events
from lambdarun_durable.testing.exceptions import DurableFunctionsTestError, RunnerClosedError
from lambdarun_durable.testing.results import (
    CallbackOperation,
    ContextOperation,
    DurableFunctionTestResult,
    ExecutionOperation,
    ExecutionStatus,
    Invocation,
    InvokeOperation,
    Operation,
    StepOperation,
    WaitOperation,
    create_operation,
    events_to_operations,
)
from lambdarun_durable.testing.runner import (
    DurableChildContextTestRunner,
    DurableFunctionTestRunner,
    TestLambdaContext,
    VirtualClock,
    normalize_input,
    utcnow,
)

__all__ = [
    "CallbackOperation",
    "ContextOperation",
    "DurableChildContextTestRunner",
    "DurableFunctionCloudTestRunner",
    "DurableFunctionTestResult",
    "DurableFunctionTestRunner",
    "DurableFunctionsTestError",
    "ErrorObject",
    "ExecutionOperation",
    "ExecutionStatus",
    "Invocation",
    "InvocationStatus",
    "InvokeOperation",
    "Operation",
    "OperationStatus",
    "OperationType",
    "RunnerClosedError",
    "StepOperation",
    "TestLambdaContext",
    "VirtualClock",
    "WaitOperation",
    "callback_id_from_events",
    "create_operation",
    "events_to_operations",
    "normalize_input",
    "utcnow",
]
