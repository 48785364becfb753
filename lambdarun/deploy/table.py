"""The DynamoDB tables of a deployment: the ones plugins contributed
(:class:`~lambdarun.deploy.contributions.TableResource`, e.g. the durable checkpoint table),
created with the key schema the plugin declared."""

from __future__ import annotations

from typing import Any

from lambdarun.deploy.base import ResourceHandler, Revert
from lambdarun.deploy.contributions import TableResource
from lambdarun.deploy.plan import Action, Change, DeploySpec

__all__ = ["TableHandler"]


class TableHandler(ResourceHandler):
    kinds = ("table",)
    service = "dynamodb"

    def state(self, spec: DeploySpec, name: str) -> tuple[bool, bool]:
        """(exists, managed) of the table ``name``."""
        ddb = self.client("dynamodb")
        try:
            desc = self.read("DescribeTable", "dynamodb:DescribeTable", lambda: ddb.describe_table(TableName=name))
        except ddb.exceptions.ResourceNotFoundException:
            return False, False
        try:
            tags = ddb.list_tags_of_resource(ResourceArn=desc["Table"]["TableArn"]).get("Tags", [])
        except self.ClientError:
            tags = []
        return True, self.managed({t["Key"]: t["Value"] for t in tags}, spec)

    def plan(self, spec: DeploySpec) -> list[Action]:
        actions = []
        for table in spec.tables:
            exists, managed = self.state(spec, table.name)
            if exists:
                actions.append(Action(Change.NOOP, "table", table.name, "exists" + ("" if managed else "; not created by deploy, kept by destroy")))
            else:
                actions.append(Action(Change.CREATE, "table", table.name, table.describe(), {"table": table}))
        return actions

    def plan_destroy(self, spec: DeploySpec) -> list[Action]:
        actions = []
        for table in spec.tables:
            exists, managed = self.state(spec, table.name)
            if exists:
                actions.append(Action(Change.DELETE, "table", table.name) if managed else Action(Change.NOOP, "table", table.name, "not created by deploy: kept"))
        return actions

    def create_table(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
        table: TableResource = action.params["table"]
        ddb = self.client("dynamodb")
        ddb.create_table(**table.create_request(), Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()])

        def revert() -> None:
            ddb.delete_table(TableName=table.name)

        try:
            ddb.get_waiter("table_exists").wait(TableName=table.name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        except Exception:
            revert()
            raise
        return revert

    def delete_table(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("dynamodb").delete_table(TableName=action.name)
