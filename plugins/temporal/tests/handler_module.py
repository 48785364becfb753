"""A Lambda handler module written as the reference's README shows it: the workflow, the
activity and ``lambda_handler = run_worker(...)`` in one module.

The workflow sandbox re-imports this module for every workflow run, so ``run_worker`` runs
inside the sandbox too; it must not touch what the sandbox forbids (``Path.cwd()``, files).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion

from lambdarun_temporal.lambda_worker import LambdaWorkerConfig, run_worker
from lambdarun_temporal.lambda_worker.otel import OtelOptions  # imported, as a handler may

DEPLOYMENT = "lambdarun-temporal-tests"
BUILD_ID = "v1"


@activity.defn
async def greet(name: str) -> str:
    return f"Hello, {name}!"


@workflow.defn(versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class GreetInModule:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(
            greet, name, start_to_close_timeout=timedelta(seconds=10)
        )


def configure(config: LambdaWorkerConfig) -> None:
    assert OtelOptions().service_name == ""
    config.worker_config["workflows"] = [GreetInModule]
    config.worker_config["activities"] = [greet]


lambda_handler = run_worker(
    WorkerDeploymentVersion(deployment_name=DEPLOYMENT, build_id=BUILD_ID), configure
)
