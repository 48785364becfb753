"""The built-in workflow: one lambdarun call, run as one activity.

Kept free of non-temporalio imports at module level so the workflow sandbox can load it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, VersioningBehavior

WORKFLOW_NAME = "lambdarun.call"
ACTIVITY_NAME = "lambdarun.execute_call"
#: failure type of an attempt cut short by the end of its worker invocation (the SDK uses it too)
WORKER_SHUTDOWN = "WorkerShutdown"


@workflow.defn(name=WORKFLOW_NAME, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class CallWorkflow:
    """Input: the signed call envelope, the per-attempt time limit and the attempt count.
    Output: the outcome envelope (value or exception, stdout/stderr)."""

    @workflow.run
    async def run(self, envelope: bytes, timeout_seconds: float, attempts: int) -> bytes:
        return await workflow.execute_activity(
            ACTIVITY_NAME,
            envelope,
            result_type=bytes,
            start_to_close_timeout=timedelta(seconds=timeout_seconds),
            # only attempts cut short by a worker's end (or its timeout) fail: the function's own
            # exceptions travel inside the outcome and are never retried
            retry_policy=RetryPolicy(
                maximum_attempts=max(1, attempts), initial_interval=timedelta(milliseconds=200)
            ),
        )
