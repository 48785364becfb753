"""What ``lambdarun deploy`` creates for the durable backend: its DynamoDB checkpoint table.

The table is declared through ``lambdarun_deploy_resources`` (deploy knows nothing of
durable's schema): when ``[durable] store_url`` is ``dynamodb://TABLE`` (or ``[deploy]
table`` names one), deploy creates TABLE with the key the DynamoDB store uses (``pk``
string hash key, ``sk`` string range key), on demand, and grants the function's role the
item actions the store needs on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.config import Settings
    from lambdarun.deploy.contributions import DeployResources

__all__ = ["checkpoint_table_name", "checkpoint_table", "lambdarun_deploy_resources", "TABLE_SID"]

#: the Sid of the role's statement on the checkpoint table
TABLE_SID = "LambdarunDurableTable"


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
    name = checkpoint_table_name(settings)
    if name:
        register.add_table(checkpoint_table(name))
