"""lambdarun-durable: the AWS durable-execution programming model on lambdarun's own engine.

Port a handler written for ``aws_durable_execution_sdk_python`` by replacing that
package name with ``lambdarun_durable`` in its imports.
"""

from lambdarun_durable.__about__ import __version__
from lambdarun_durable.concurrency.models import BatchCompletionError, BatchResult
from lambdarun_durable.completion import (
    BatchItemStatus,
    CompletionDecision,
    CompletionItemStatus,
    CompletionOutcome,
    CompletionStatus,
    complete_batch,
    continue_batch,
)
from lambdarun_durable.context import (
    DurableContext,
    durable_parallel_branch,
    durable_step,
    durable_wait_for_callback,
    durable_with_child_context,
)
from lambdarun_durable.exceptions import (
    CallbackError,
    CallbackExternalError,
    CallbackSubmitterError,
    CallbackTimeoutError,
    ChildContextError,
    DurableExecutionsError,
    DurableOperationError,
    ExecutionError,
    InvocationError,
    InvokeError,
    NonDeterministicExecutionError,
    PluginLoadError,
    RetryableSerDesError,
    SerDesError,
    StepError,
    ValidationError,
    WaitForConditionError,
)
from lambdarun_durable.execution import durable_execution
from lambdarun_durable.operation_config import ParallelBranch
from lambdarun_durable.retries import WithRetryConfig, with_retry
from lambdarun_durable.types import StepContext

__all__ = [
    "BatchCompletionError",
    "BatchItemStatus",
    "BatchResult",
    "CallbackError",
    "CallbackExternalError",
    "CallbackSubmitterError",
    "CallbackTimeoutError",
    "ChildContextError",
    "CompletionDecision",
    "CompletionItemStatus",
    "CompletionOutcome",
    "CompletionStatus",
    "DurableContext",
    "DurableExecutionsError",
    "DurableOperationError",
    "ExecutionError",
    "InvocationError",
    "InvokeError",
    "NonDeterministicExecutionError",
    "ParallelBranch",
    "PluginLoadError",
    "RetryableSerDesError",
    "SerDesError",
    "StepContext",
    "StepError",
    "ValidationError",
    "WaitForConditionError",
    "WithRetryConfig",
    "__version__",
    "complete_batch",
    "continue_batch",
    "durable_execution",
    "durable_parallel_branch",
    "durable_step",
    "durable_wait_for_callback",
    "durable_with_child_context",
    "with_retry",
]
