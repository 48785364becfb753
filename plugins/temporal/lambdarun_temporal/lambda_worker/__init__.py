"""Run a Temporal worker inside AWS Lambda, one worker per invocation.

A drop-in for ``temporalio.contrib.aws.lambda_worker`` (``run_worker``, the dataclass
``LambdaWorkerConfig``, the ``otel`` helper module; the reference's exception types and
messages, stdlib ``logging`` records under its logger names, workflows defined in the
handler module; its own tests pass against this package: ``tests/reference_ported``),
with these differences:

* the handler returns once the task queue has been idle for ``idle_timeout`` (default 1 s),
  counted from when the server listed the worker's pollers, and the server reports no
  backlog (``_idle``);
* throughput defaults (pollers, concurrency, 1 s graceful shutdown) drain a backlog quickly;
* the shutdown buffer follows graceful shutdown + hook budget, a too-short timeout is a
  clear error and the handler never returns after the Lambda deadline, hooks included;
* shutdown hooks run on every exit path (connect, ``Worker()`` and run failures);
* the config file chain is ``TEMPORAL_CONFIG_FILE`` -> ``$LAMBDA_TASK_ROOT/temporal.toml``
  -> ``./temporal.toml`` and a bad file is an error naming the file and the key;
* worker, client and runtime are finalized before the handler returns (clean exit).

Quick start::

    from temporalio.common import WorkerDeploymentVersion
    from lambdarun_temporal.lambda_worker import LambdaWorkerConfig, run_worker

    def configure(config: LambdaWorkerConfig) -> None:
        config.worker_config["task_queue"] = "my-task-queue"
        config.worker_config["workflows"] = [MyWorkflow]
        config.worker_config["activities"] = [my_activity]

    lambda_handler = run_worker(
        WorkerDeploymentVersion(deployment_name="my-service", build_id="v1.0"), configure
    )
"""

from temporalio import workflow

# A handler module that defines its workflows is re-imported by the workflow sandbox for
# every workflow run, and with it this package: its implementation (and what that imports:
# structlog, lambdarun, ...) is passed through to the already-imported modules instead of
# being re-executed under the sandbox's restrictions (the reference lives in ``temporalio``,
# which the sandbox passes through by default).
with workflow.unsafe.imports_passed_through():
    from lambdarun_temporal.lambda_worker._client_profile import load_client_profile
    from lambdarun_temporal.lambda_worker._configure import LambdaWorkerConfig
    from lambdarun_temporal.lambda_worker._run_worker import (
        ConfigureCallback,
        InvocationSummary,
        run_worker,
    )

__all__ = [
    "ConfigureCallback",
    "InvocationSummary",
    "LambdaWorkerConfig",
    "load_client_profile",
    "run_worker",
]
