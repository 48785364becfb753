"""One worker invocation for the benchmarks (``benchmarks/test_temporal.py``).

    python -m lambdarun_temporal._benchmark {ours|reference|reference-like-ours} <lambda timeout seconds>

Environment: ``TEMPORAL_ADDRESS``, ``TEMPORAL_TASK_QUEUE``. Runs ``run_worker`` of this
package or of ``temporalio.contrib.aws.lambda_worker`` (each with its own defaults) once
with a fake Lambda context and prints one JSON line with wall-clock start/end.
``reference-like-ours`` is the reference configured with our defaults' concurrency, pollers
and workflow cache (:func:`configure_like_ours`), to compare the designs rather than defaults.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion

DEPLOYMENT = "lambdarun-temporal-bench"
BUILD_ID = "b1"
#: each activity stands for one call to another service
ACTIVITY_SECONDS = 0.1


@activity.defn
async def io_call(x: int) -> int:
    await asyncio.sleep(ACTIVITY_SECONDS)
    return x + 1


@workflow.defn(versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class BenchWorkflow:
    @workflow.run
    async def run(self, x: int) -> int:
        return await workflow.execute_activity(io_call, x, start_to_close_timeout=timedelta(seconds=30))


def configure(config) -> None:  # same registration for both implementations
    config.worker_config["workflows"] = [BenchWorkflow]
    config.worker_config["activities"] = [io_call]


def configure_like_ours(config) -> None:
    """The reference with our defaults' concurrency, pollers and workflow cache (not our idle
    timeout or shutdown budget, which it does not have)."""
    from lambdarun_temporal.lambda_worker import _defaults as ours

    configure(config)
    config.worker_config.update(
        max_concurrent_activities=ours.DEFAULT_MAX_CONCURRENT_ACTIVITIES,
        max_concurrent_workflow_tasks=ours.DEFAULT_MAX_CONCURRENT_WORKFLOW_TASKS,
        max_concurrent_local_activities=ours.DEFAULT_MAX_CONCURRENT_LOCAL_ACTIVITIES,
        max_concurrent_nexus_tasks=ours.DEFAULT_MAX_CONCURRENT_NEXUS_TASKS,
        max_cached_workflows=ours.DEFAULT_MAX_CACHED_WORKFLOWS,
        workflow_task_poller_behavior=ours.DEFAULT_WORKFLOW_TASK_POLLER_BEHAVIOR,
        activity_task_poller_behavior=ours.DEFAULT_ACTIVITY_TASK_POLLER_BEHAVIOR,
        nonsticky_to_sticky_poll_ratio=ours.DEFAULT_NONSTICKY_TO_STICKY_POLL_RATIO,
    )


def main() -> None:
    impl, timeout = sys.argv[1], float(sys.argv[2])
    if impl == "ours":
        from lambdarun_temporal.lambda_worker import run_worker
    else:
        from temporalio.contrib.aws.lambda_worker import run_worker  # type: ignore[no-redef]
    from lambdarun_temporal.testing import FakeLambdaContext

    handler = run_worker(WorkerDeploymentVersion(deployment_name=DEPLOYMENT, build_id=BUILD_ID),
                         configure_like_ours if impl == "reference-like-ours" else configure)
    context = FakeLambdaContext(timeout=timeout)
    start_wall, start = time.time(), time.monotonic()
    result = handler({}, context)
    print(
        json.dumps(
            {
                "impl": impl,
                "result": result,
                "start": start_wall,
                "end": time.time(),
                "elapsed": time.monotonic() - start,
                "remaining_ms": context.get_remaining_time_in_millis(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
