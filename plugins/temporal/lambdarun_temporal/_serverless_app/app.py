"""A Temporal worker Lambda function the Temporal server invokes (Serverless Workers), for the
tests and benchmarks: deployment, build id and task queue come from the function's
environment; ``SW_IMPL=reference`` runs ``temporalio.contrib.aws.lambda_worker`` instead of
``lambdarun_temporal.lambda_worker`` (same workflow, same activity)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sw_workflows import ServerlessHello, which_build
from temporalio.common import WorkerDeploymentVersion

if os.environ.get("SW_IMPL") == "reference":
    from temporalio.contrib.aws.lambda_worker import run_worker
else:
    from lambdarun_temporal.lambda_worker import run_worker


def configure(config) -> None:
    config.worker_config["task_queue"] = os.environ["SW_TASK_QUEUE"]
    config.worker_config["workflows"] = [ServerlessHello]
    config.worker_config["activities"] = [which_build]


_worker = run_worker(
    WorkerDeploymentVersion(deployment_name=os.environ["SW_DEPLOYMENT"], build_id=os.environ["SW_BUILD_ID"]),
    configure,
)


def _mark(what: str) -> None:
    marks = os.environ.get("SW_INVOCATIONS")
    if marks:  # one line per invocation start and end (epoch seconds, build id, what)
        with open(Path(marks), "a") as f:
            f.write(f"{time.time()} {os.environ['SW_BUILD_ID']} {what}\n")


def handler(event, context):
    _mark("start " + json.dumps(event, separators=(",", ":")))
    try:
        result = _worker(event, context)
    except BaseException as exc:
        _mark(f"end error {type(exc).__name__}")
        raise
    _mark("end ok")
    return result
