"""What ``lambdarun deploy`` creates for the durable backend: its DynamoDB checkpoint table.

The table is declared through ``lambdarun_deploy_resources`` (deploy knows nothing of
durable's schema): when ``[durable] store_url`` is ``dynamodb://TABLE`` (or ``[deploy]
table`` names one), deploy creates TABLE with the key the DynamoDB store uses (``pk``
string hash key, ``sk`` string range key), on demand, and grants the function's role the
item actions the store needs on it.

It also grants the role ``lambda:CheckpointDurableExecution`` and
``lambda:GetDurableExecutionState`` on the function itself (what AWS's managed
``AWSLambdaBasicDurableExecutionRolePolicy`` grants, scoped to the function as AWS's
durable-functions security guide advises), and, when ``durable`` is the deployed (default)
backend, creates the function with ``DurableConfig`` (``ExecutionTimeout``: ``[durable]
execution_timeout``, else one year), so the durable backend runs on AWS's durable API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.config import Settings
    from lambdarun.deploy.contributions import DeployResources

__all__ = ["checkpoint_table_name", "checkpoint_table", "lambdarun_deploy_resources", "TABLE_SID", "API_SID"]

#: the Sid of the role's statement on the checkpoint table
TABLE_SID = "LambdarunDurableTable"
#: the Sid of the role's statement on the durable-execution API
API_SID = "LambdarunDurableExecution"


def checkpoint_table_name(settings: Settings) -> str | None:
    """The checkpoint table deploy must create: ``[deploy] table`` when set, else the table of
    a ``dynamodb://TABLE`` store URL; None for the other stores."""
    deploy = settings.sections.get("deploy")
    named = getattr(deploy, "table", "") if deploy is not None else ""
    if named:
        return str(named)
    durable = settings.sections.get("durable")
    url = getattr(durable, "store_url", None) if durable is not None else None
    if isinstance(url, str) and urlparse(url).scheme == "dynamodb":
        return url[len("dynamodb://"):].strip("/") or None
    return None


def checkpoint_table(name: str) -> Any:
    """The :class:`~lambdarun.deploy.contributions.TableResource` of the checkpoint table ``name``."""
    from lambdarun.deploy.contributions import KeyAttribute, TableResource

    return TableResource(
        name,
        keys=(KeyAttribute("pk", "S", "HASH"), KeyAttribute("sk", "S", "RANGE")),
        purpose="durable checkpoints",
        sid=TABLE_SID,
    )


@hookimpl
def lambdarun_deploy_resources(settings: Settings, register: DeployResources) -> None:
    from lambdarun.deploy.contributions import PolicyStatement

    from lambdarun_durable.backend import MAX_EXECUTION_TIMEOUT

    name = checkpoint_table_name(settings)
    if name:
        register.add_table(checkpoint_table(name))
    register.add_statement(PolicyStatement(
        sid=API_SID,
        actions=("lambda:CheckpointDurableExecution", "lambda:GetDurableExecutionState"),
        resources=("arn:{partition}:lambda:{region}:{account}:function:{function}:*",),
    ))
    durable = settings.sections.get("durable")
    timeout = getattr(durable, "execution_timeout", None) if durable is not None else None
    register.set_function_config("durable", "DurableConfig", {"ExecutionTimeout": int(timeout or MAX_EXECUTION_TIMEOUT)})
