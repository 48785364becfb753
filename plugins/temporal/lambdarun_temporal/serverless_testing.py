"""Test and benchmark support for Temporal Serverless Workers on the local stack.

:class:`ServerlessSetup` does what an operator does by hand (the ``temporal`` CLI and IAM), no
lambdarun machinery: a role whose trust policy requires an External ID (in the local IAM), a
worker function on the local Lambda (``_serverless_app/``: ``lambda_worker.run_worker`` or the
reference ``temporalio.contrib.aws.lambda_worker``), ``temporal worker deployment create`` /
``create-version`` with the compute config / ``set-current-version``. The workflows are
then started by a plain temporalio Client; the server invokes the function.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from lambdarun_temporal.devserver import DevServer, find_temporal_cli

__all__ = ["APP_DIR", "WORKFLOW", "ServerlessSetup", "run_workflows", "wait_routed"]

#: the worker function's code (used in place: ``Code={"S3Bucket": "__local__", ...}``)
APP_DIR = Path(__file__).resolve().parent / "_serverless_app"
#: its workflow type (a client needs no import of it)
WORKFLOW = "ServerlessHello"


class ServerlessSetup:
    """Role, function(s) and deployment versions with unique names on one stack + server.

    :param stack: a started :class:`lambdarun.local.LocalStack`.
    :param server: a :class:`DevServer` with ``worker_controller=True`` and the stack's
        environment (:func:`lambdarun_temporal.devserver.serverless_workers_environment`).
    :param workdir: where the function records its invocations (``invocations.txt``).
    :param impl: ``"ours"`` or ``"reference"`` (the Lambda worker the function runs).
    """

    def __init__(self, stack: Any, server: DevServer, workdir: Path, *, impl: str = "ours",
                 function_timeout: int = 60) -> None:
        self.stack, self.server, self.impl, self.function_timeout = stack, server, impl, function_timeout
        self.suffix = uuid.uuid4().hex[:8]
        self.deployment = f"sw-{self.suffix}"
        self.task_queue = f"sw-tq-{self.suffix}"
        self.external_id = f"ext-{uuid.uuid4().hex}"
        self.invocations = Path(workdir) / f"invocations-{self.suffix}.txt"
        self.invocations.touch()
        iam = stack.client("iam")
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": self.external_id}}}]}
        self.role_arn = iam.create_role(RoleName=f"temporal-invoke-{self.suffix}",
                                        AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        self.cli(["worker", "deployment", "create", "--name", self.deployment])

    def cli(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [find_temporal_cli(), *args, "--address", self.server.address]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}{done.stdout}")
        return done

    def function(self, build_id: str) -> str:
        """Create the worker function of ``build_id``; its ARN."""
        import lambdarun
        import lambdarun_temporal

        roots = [str(Path(lambdarun_temporal.__file__).resolve().parents[1]),
                 str(Path(lambdarun.__file__).resolve().parents[1])]
        config = self.stack.client("lambda").create_function(
            FunctionName=f"sw-{self.suffix}-{build_id}", Runtime="python3.11", Handler="app.handler",
            Role="arn:aws:iam::123456789012:role/lambdarun-test", Timeout=self.function_timeout, MemorySize=512,
            Code={"S3Bucket": "__local__", "S3Key": str(APP_DIR)},
            Environment={"Variables": {
                "PYTHONPATH": os.pathsep.join(roots), "TEMPORAL_ADDRESS": self.server.address,
                "TEMPORAL_NAMESPACE": "default", "SW_DEPLOYMENT": self.deployment, "SW_BUILD_ID": build_id,
                "SW_TASK_QUEUE": self.task_queue, "SW_INVOCATIONS": str(self.invocations), "SW_IMPL": self.impl}})
        return str(config["FunctionArn"])

    def version(self, build_id: str, function_arn: str, *, external_id: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli(["worker", "deployment", "create-version", "--deployment-name", self.deployment,
                         "--build-id", build_id, "--aws-lambda-function-arn", function_arn,
                         "--aws-lambda-assume-role-arn", self.role_arn,
                         "--aws-lambda-assume-role-external-id", external_id or self.external_id], check=check)

    def set_current(self, build_id: str) -> None:
        # a Serverless Worker version has no poller until the server first invokes it
        self.cli(["worker", "deployment", "set-current-version", "--deployment-name", self.deployment,
                  "--build-id", build_id, "--allow-no-pollers", "--ignore-missing-task-queues", "--yes"])

    def deploy(self, build_id: str) -> str:
        """Function + version + current, routing propagated; the function's ARN."""
        arn = self.function(build_id)
        self.version(build_id, arn)
        self.set_current(build_id)
        self.wait_routed(build_id)
        return arn

    def wait_routed(self, build_id: str, timeout: float = 180.0) -> None:
        """Wait until the server reports the new routing (current = ``build_id``) propagated
        to the deployment's task queues (``set-current-version`` returns before that)."""
        asyncio.run(wait_routed(self.server.address, self.deployment, build_id, timeout))

    def _marks(self, what: str) -> list[tuple[float, str]]:
        out = []
        for line in self.invocations.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2] == what:
                out.append((float(parts[0]), parts[1]))
        return out

    def invocation_times(self) -> list[tuple[float, str]]:
        """(epoch seconds at handler entry, build id) of every invocation so far."""
        return self._marks("start")

    def ended(self) -> int:
        """How many invocations have returned (or raised) so far."""
        return len(self._marks("end"))

    def wait_no_worker(self, timeout: float) -> None:
        """Wait until every invocation so far has ended: no worker polls the queue."""
        deadline = time.monotonic() + timeout
        while self.ended() < len(self.invocation_times()):
            if time.monotonic() >= deadline:
                raise AssertionError(f"invocations still running after {timeout} s:\n"
                                     + self.invocations.read_text()[-2000:])
            time.sleep(0.1)

    def invoked_builds(self) -> list[str]:
        return [build for _, build in self.invocation_times()]


async def wait_routed(address: str, deployment: str, build_id: str, timeout: float) -> None:
    from temporalio.api.enums.v1 import RoutingConfigUpdateState
    from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest
    from temporalio.client import Client

    client = await Client.connect(address)
    deadline = time.monotonic() + timeout
    while True:
        info = (await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace="default", deployment_name=deployment))).worker_deployment_info
        if (info.routing_config.current_deployment_version.build_id == build_id and info.routing_config_update_state
                == RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_COMPLETED):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"routing to {build_id} not propagated within {timeout} s: current "
                f"{info.routing_config.current_deployment_version.build_id!r}, update state "
                f"{RoutingConfigUpdateState.Name(info.routing_config_update_state)}")
        await asyncio.sleep(0.1)


async def run_workflows(address: str, task_queue: str, names: list[str], timeout: float) -> tuple[float, list[str]]:
    """Start one workflow per name with a plain Client, wait for all; (epoch seconds of the
    first start, results in order)."""
    from temporalio.client import Client

    client = await Client.connect(address)
    started = time.time()
    sem = asyncio.Semaphore(50)

    async def start(name: str) -> Any:
        async with sem:
            return await client.start_workflow(WORKFLOW, name, id=f"wf-{uuid.uuid4().hex}", task_queue=task_queue)

    handles = await asyncio.gather(*(start(n) for n in names))
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout)
    return started, list(results)

