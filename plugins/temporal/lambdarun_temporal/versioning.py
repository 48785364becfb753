"""Worker deployment versioning helpers (a versioned worker gets no task until its version
is current)."""

from __future__ import annotations

from typing import Any

__all__ = ["set_current_version"]


async def set_current_version(client: Any, deployment_name: str, build_id: str) -> None:
    """Make ``deployment_name``/``build_id`` the current version of its deployment, also
    before any worker of it has polled (``allow_no_pollers``)."""
    from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest

    await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace,
            deployment_name=deployment_name,
            build_id=build_id,
            allow_no_pollers=True,
            identity="lambdarun-temporal",
        )
    )
