"""The function's IAM execution role and its inline least-privilege policy
(:mod:`lambdarun.deploy.policy` writes the documents)."""

from __future__ import annotations

import json
import time
from typing import Any

from lambdarun.deploy.base import ResourceHandler, Revert
from lambdarun.deploy.plan import Action, Change, DeploySpec
from lambdarun.deploy.policy import POLICY_NAME, execution_policy, partition_of, trust_policy

__all__ = ["RoleHandler"]


def _as_doc(document: Any) -> Any:
    if document is None:
        return None
    if isinstance(document, str):
        from urllib.parse import unquote

        text = document if document.lstrip().startswith("{") else unquote(document)
        return json.loads(text)
    return document


class RoleHandler(ResourceHandler):
    kinds = ("role", "role-policy")
    service = "iam"

    def state(self, spec: DeploySpec) -> dict[str, Any] | None:
        iam = self.client("iam")
        try:
            role = self.read("GetRole", "iam:GetRole", lambda: iam.get_role(RoleName=spec.role_name))["Role"]
        except iam.exceptions.NoSuchEntityException:
            return None
        tags = role.get("Tags")
        if tags is None:
            tags = iam.list_role_tags(RoleName=spec.role_name).get("Tags", [])
        role["_managed"] = self.managed({t["Key"]: t["Value"] for t in tags}, spec)
        try:
            role["_policy"] = _as_doc(
                iam.get_role_policy(RoleName=spec.role_name, PolicyName=POLICY_NAME)["PolicyDocument"]
            )
        except iam.exceptions.NoSuchEntityException:
            role["_policy"] = None
        role["_trust"] = _as_doc(role.get("AssumeRolePolicyDocument"))
        return role

    def policy(self, spec: DeploySpec) -> dict[str, Any]:
        return execution_policy(
            function_name=spec.function_name,
            region=spec.region,
            account=spec.account,
            bucket=spec.bucket,
            prefix=spec.prefix,
            signing_secret=spec.signing_secret or None,
            tables=spec.tables,
            statements=spec.statements,
        )

    def plan(self, spec: DeploySpec) -> tuple[list[Action], str]:
        """The role's actions and the ARN the function will run with."""
        actions: list[Action] = []
        policy = self.policy(spec)
        role = self.state(spec)
        role_arn = f"arn:{partition_of(spec.region)}:iam::{spec.account}:role/{spec.role_name}"
        if role is None:
            actions.append(Action(Change.CREATE, "role", spec.role_name, "trusts lambda.amazonaws.com", {"policy": policy}))
            actions.append(Action(Change.CREATE, "role-policy", f"{spec.role_name}/{POLICY_NAME}", "least privilege", {"policy": policy}))
            return actions, role_arn
        role_arn = role["Arn"]
        if not role["_managed"]:
            actions.append(Action(Change.NOOP, "role", spec.role_name, "exists, not created by deploy: used as is"))
            return actions, role_arn
        if role["_trust"] != trust_policy():
            actions.append(Action(Change.UPDATE, "role", spec.role_name, "trust policy differs"))
        else:
            actions.append(Action(Change.NOOP, "role", spec.role_name, "up to date"))
        if role["_policy"] != policy:
            change = Change.CREATE if role["_policy"] is None else Change.UPDATE
            actions.append(Action(change, "role-policy", f"{spec.role_name}/{POLICY_NAME}", "policy differs", {"policy": policy}))
        else:
            actions.append(Action(Change.NOOP, "role-policy", f"{spec.role_name}/{POLICY_NAME}", "up to date"))
        return actions, role_arn

    def plan_destroy(self, spec: DeploySpec) -> list[Action]:
        role = self.state(spec)
        if role is None:
            return []
        if role["_managed"]:
            return [Action(Change.DELETE, "role", spec.role_name, "with its inline policies")]
        return [Action(Change.NOOP, "role", spec.role_name, "not created by deploy: kept")]

    def create_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
        iam = self.client("iam")
        iam.create_role(
            RoleName=spec.role_name,
            AssumeRolePolicyDocument=json.dumps(trust_policy()),
            Description=f"Execution role of the lambdarun function {spec.function_name}",
            Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()],
        )
        state["role_created"] = time.monotonic()

        def revert() -> None:
            self.delete_role(spec, action, state)

        return revert

    def update_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("iam").update_assume_role_policy(RoleName=spec.role_name, PolicyDocument=json.dumps(trust_policy()))

    def create_role_policy(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
        iam = self.client("iam")
        iam.put_role_policy(RoleName=spec.role_name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(action.params["policy"]))

        def revert() -> None:
            try:
                iam.delete_role_policy(RoleName=spec.role_name, PolicyName=POLICY_NAME)
            except iam.exceptions.NoSuchEntityException:
                pass

        return revert

    update_role_policy = create_role_policy

    def delete_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        iam = self.client("iam")
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=spec.role_name):
            for name in page.get("PolicyNames", []):
                iam.delete_role_policy(RoleName=spec.role_name, PolicyName=name)
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=spec.role_name):
            for attached in page.get("AttachedPolicies", []):
                iam.detach_role_policy(RoleName=spec.role_name, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=spec.role_name)
