"""What ``lambdarun deploy`` creates for Temporal Serverless Workers: the invoke role.

With ``[temporal] worker_controller = "server"``, ``temporal_principal`` and ``external_id``,
deploy creates ``<function>-temporal-invoke``: a role the Temporal server (its AWS account or
role, ``temporal_principal``) may assume only with ``external_id``, allowed
``lambda:InvokeFunction`` and ``lambda:GetFunction`` on the deployed function only (and its
versions/aliases), and prints the ``temporal worker deployment create-version`` command that
registers the function as the compute of a Worker Deployment Version. Declared through
``lambdarun_deploy_resources`` (:class:`lambdarun.deploy.contributions.RoleResource`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.config import Settings
    from lambdarun.deploy.contributions import DeployResources

__all__ = ["INVOKE_SID", "invoke_role", "lambdarun_deploy_resources"]

INVOKE_SID = "TemporalServerlessWorkerInvoke"
FUNCTION_ARN = "arn:{partition}:lambda:{region}:{account}:function:{function}"


def invoke_role(section: object) -> object:
    """The :class:`RoleResource` of ``section`` (a :class:`TemporalConfig`)."""
    from lambdarun.deploy.contributions import PolicyStatement, RoleResource

    address = getattr(section, "address", None) or "TEMPORAL_ADDRESS"
    namespace = getattr(section, "namespace", "default")
    note = (
        "register the function with the Temporal server: temporal worker deployment create-version "
        f"--address {address} --namespace {namespace} "
        f"--deployment-name {getattr(section, 'deployment_name')} --build-id {getattr(section, 'build_id')} "
        "--aws-lambda-function-arn {function_arn} --aws-lambda-assume-role-arn {role_arn} "
        "--aws-lambda-assume-role-external-id {external_id} (then set-current-version)"
    )
    return RoleResource(
        name="{function}-temporal-invoke",
        principal=str(getattr(section, "temporal_principal")),
        external_id=str(getattr(section, "external_id")),
        statements=[PolicyStatement(INVOKE_SID, ("lambda:InvokeFunction", "lambda:GetFunction"),
                                    (FUNCTION_ARN, FUNCTION_ARN + ":*"))],
        purpose="assumed by the Temporal server (Serverless Workers) to invoke the worker function",
        note=note,
    )


@hookimpl
def lambdarun_deploy_resources(settings: Settings, register: DeployResources) -> None:
    section = settings.sections.get("temporal")
    if section is None or getattr(section, "worker_controller", "auto") != "server":
        return
    principal, external_id = getattr(section, "temporal_principal", None), getattr(section, "external_id", None)
    if not principal and not external_id:
        return  # a server lambdarun starts itself (local target): the backend creates its role
    if not principal or not external_id:
        from lambdarun.deploy.contributions import ContributionError

        raise ContributionError(
            "[temporal] worker_controller = \"server\" deploys the Temporal invoke role: set both "
            "[temporal] temporal_principal (the Temporal server's AWS account id or role ARN) and "
            "[temporal] external_id (the External ID its trust policy requires). Nothing was created.")
    register.add_role(invoke_role(section))  # type: ignore[arg-type]
