"""A Temporal worker Lambda function the Temporal server invokes (Serverless Workers):
deployment, build id and task queue come from the function's environment."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sw_workflows import ServerlessHello, which_build
from temporalio.common import WorkerDeploymentVersion

from lambdarun_temporal.lambda_worker import LambdaWorkerConfig, run_worker


def configure(config: LambdaWorkerConfig) -> None:
    config.worker_config["task_queue"] = os.environ["SW_TASK_QUEUE"]
    config.worker_config["workflows"] = [ServerlessHello]
    config.worker_config["activities"] = [which_build]


_worker = run_worker(
    WorkerDeploymentVersion(deployment_name=os.environ["SW_DEPLOYMENT"], build_id=os.environ["SW_BUILD_ID"]),
    configure,
)


def handler(event, context):
    marks = os.environ.get("SW_INVOCATIONS")
    if marks:  # one line per invocation: when the server invoked, and the event it sent
        with open(Path(marks), "a") as f:
            f.write(f"{time.time()} {os.environ['SW_BUILD_ID']} {json.dumps(event, separators=(',', ':'))}\n")
    return _worker(event, context)
