"""What ``lambdarun deploy`` grants for the covalent backend: the function may invoke itself.

The backend makes the function its own on-failure destination (Lambda's
``EventInvokeConfig``), so an asynchronous task whose environment dies reaches its caller
(:mod:`lambdarun_covalent.runtime`); Lambda delivers to a destination with the function's
role, so that role needs ``lambda:InvokeFunction`` on the function itself, and on nothing
else. Declared through ``lambdarun_deploy_resources``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.config import Settings
    from lambdarun.deploy.contributions import DeployResources

__all__ = ["self_destination_statement", "lambdarun_deploy_resources", "SELF_DESTINATION_SID"]

SELF_DESTINATION_SID = "LambdarunSelfDestination"


def self_destination_statement() -> Any:
    """The :class:`~lambdarun.deploy.contributions.PolicyStatement` letting the function be its
    own on-failure destination."""
    from lambdarun.deploy.contributions import PolicyStatement

    return PolicyStatement(
        sid=SELF_DESTINATION_SID,
        actions=("lambda:InvokeFunction",),
        resources=("arn:{partition}:lambda:{region}:{account}:function:{function}",),
    )


@hookimpl
def lambdarun_deploy_resources(settings: Settings, register: DeployResources) -> None:
    register.add_statement(self_destination_statement())
