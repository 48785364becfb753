"""Roles the plugins contribute besides the execution role
(:class:`~lambdarun.deploy.contributions.RoleResource`): assumed by a third party with an
External ID, e.g. the Temporal server invoking a worker function (Serverless Workers)."""

from __future__ import annotations

import json
from typing import Any

from lambdarun.deploy.base import ResourceHandler, Revert
from lambdarun.deploy.contributions import RoleResource
from lambdarun.deploy.plan import Action, Change, DeploySpec
from lambdarun.deploy.policy import partition_of

__all__ = ["ExtraRoleHandler", "EXTRA_ROLE_POLICY"]

#: the inline policy name of a contributed role
EXTRA_ROLE_POLICY = "lambdarun-contributed"


def _doc(document: Any) -> Any:
    if isinstance(document, str):
        from urllib.parse import unquote

        text = document if document.lstrip().startswith("{") else unquote(document)
        return json.loads(text)
    return document


class ExtraRoleHandler(ResourceHandler):
    kinds = ("extra-role",)
    service = "iam"

    def _values(self, spec: DeploySpec) -> dict[str, str]:
        partition = partition_of(spec.region)
        return {"partition": partition, "region": spec.region, "account": spec.account,
                "function": spec.function_name,
                "function_arn": f"arn:{partition}:lambda:{spec.region}:{spec.account}:function:{spec.function_name}"}

    def _name(self, spec: DeploySpec, role: RoleResource) -> str:
        return role.name.replace("{function}", spec.function_name)[:64]

    def _wanted(self, spec: DeploySpec, role: RoleResource) -> tuple[dict[str, Any], dict[str, Any]]:
        values = self._values(spec)
        policy = role.policy(partition=values["partition"], region=spec.region, account=spec.account,
                             function=spec.function_name)
        return role.trust_policy(), policy

    def note(self, spec: DeploySpec, role: RoleResource) -> str:
        """``role.note`` with its placeholders filled in."""
        values = self._values(spec)
        name = self._name(spec, role)
        values.update(role_arn=f"arn:{values['partition']}:iam::{spec.account}:role/{name}",
                      external_id=role.external_id)
        text = role.note
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text

    def state(self, spec: DeploySpec, name: str) -> dict[str, Any] | None:
        iam = self.client("iam")
        try:
            found = self.read("GetRole", "iam:GetRole", lambda: iam.get_role(RoleName=name))["Role"]
        except iam.exceptions.NoSuchEntityException:
            return None
        tags = found.get("Tags")
        if tags is None:
            tags = iam.list_role_tags(RoleName=name).get("Tags", [])
        found["_managed"] = self.managed({t["Key"]: t["Value"] for t in tags}, spec)
        found["_trust"] = _doc(found.get("AssumeRolePolicyDocument"))
        try:
            found["_policy"] = _doc(iam.get_role_policy(RoleName=name, PolicyName=EXTRA_ROLE_POLICY)["PolicyDocument"])
        except iam.exceptions.NoSuchEntityException:
            found["_policy"] = None
        return found

    def plan(self, spec: DeploySpec) -> list[Action]:
        actions = []
        for role in spec.roles:
            name = self._name(spec, role)
            trust, policy = self._wanted(spec, role)
            params = {"role": role, "trust": trust, "policy": policy}
            detail = (role.purpose or "contributed role") + (f"; then: {self.note(spec, role)}" if role.note else "")
            found = self.state(spec, name)
            if found is None:
                actions.append(Action(Change.CREATE, "extra-role", name, detail, params))
            elif not found["_managed"]:
                actions.append(Action(Change.NOOP, "extra-role", name, "exists, not created by deploy: used as is"))
            elif found["_trust"] != trust or found["_policy"] != policy:
                actions.append(Action(Change.UPDATE, "extra-role", name, "trust or policy differs; " + detail, params))
            else:
                actions.append(Action(Change.NOOP, "extra-role", name, "up to date; " + detail))
        return actions

    def plan_destroy(self, spec: DeploySpec) -> list[Action]:
        actions = []
        for role in spec.roles:
            name = self._name(spec, role)
            found = self.state(spec, name)
            if found is None:
                continue
            actions.append(Action(Change.DELETE, "extra-role", name, "with its inline policy") if found["_managed"]
                           else Action(Change.NOOP, "extra-role", name, "not created by deploy: kept"))
        return actions

    def create_extra_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
        iam = self.client("iam")
        role: RoleResource = action.params["role"]
        iam.create_role(RoleName=action.name, AssumeRolePolicyDocument=json.dumps(action.params["trust"]),
                        Description=(role.purpose or f"assumed by {role.principal}")[:1000],
                        Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()])
        iam.put_role_policy(RoleName=action.name, PolicyName=EXTRA_ROLE_POLICY,
                            PolicyDocument=json.dumps(action.params["policy"]))

        def revert() -> None:
            self.delete_extra_role(spec, action, state)

        return revert

    def update_extra_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        iam = self.client("iam")
        iam.update_assume_role_policy(RoleName=action.name, PolicyDocument=json.dumps(action.params["trust"]))
        iam.put_role_policy(RoleName=action.name, PolicyName=EXTRA_ROLE_POLICY,
                            PolicyDocument=json.dumps(action.params["policy"]))

    def delete_extra_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        iam = self.client("iam")
        try:
            iam.delete_role_policy(RoleName=action.name, PolicyName=EXTRA_ROLE_POLICY)
        except iam.exceptions.NoSuchEntityException:
            pass
        iam.delete_role(RoleName=action.name)
