"""Worker deployment versioning helpers (a versioned worker gets no task until its version
is current)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["set_current_version"]


async def set_current_version(
    client: Any, deployment_name: str, build_id: str, *, timeout: float = 15.0,
    ignore_missing_task_queues: bool = False,
) -> None:
    """Make ``deployment_name``/``build_id`` the current version of its deployment, also
    before any worker of it has polled (``allow_no_pollers``).

    Retries transient failures (a server that just started answers NOT_FOUND/UNAVAILABLE
    for its deployment machinery for a moment) for up to ``timeout`` seconds.
    """
    from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
    from temporalio.service import RPCError

    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace,
        deployment_name=deployment_name,
        build_id=build_id,
        allow_no_pollers=True,
        # a Serverless Worker version has no poller before the server first invokes it
        ignore_missing_task_queues=ignore_missing_task_queues,
        identity="lambdarun-temporal",
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.workflow_service.set_worker_deployment_current_version(request)
            return
        except RPCError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)
