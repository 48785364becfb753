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
#: envelopes larger than this go through lambdarun storage instead of a Temporal payload
#: (the server refuses payloads over 2 MB by default)
INLINE_LIMIT = 1_500_000


@workflow.defn(name=WORKFLOW_NAME, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class CallWorkflow:
    """Input: the signed call envelope (or ``b""`` and ``call_url`` when it was too large for
    a Temporal payload), the per-attempt time limit, the attempt count, and where to store
    an outcome too large to return. Output: the outcome envelope, or ``b""`` when it was
    stored at ``outcome_url``."""

    @workflow.run
    async def run(
        self,
        envelope: bytes,
        timeout_seconds: float,
        attempts: int,
        call_url: str = "",
        outcome_url: str = "",
    ) -> bytes:
        return await workflow.execute_activity(
            ACTIVITY_NAME,
            args=[envelope, call_url, outcome_url],
            result_type=bytes,
            start_to_close_timeout=timedelta(seconds=timeout_seconds),
            # only attempts cut short by a worker's end (or its timeout) fail: the function's own
            # exceptions travel inside the outcome and are never retried
            retry_policy=RetryPolicy(
                maximum_attempts=max(1, attempts), initial_interval=timedelta(milliseconds=200)
            ),
        )
