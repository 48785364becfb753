"""A function's resource-based policy: AddPermission, RemovePermission, GetPolicy.

Kept and answered as AWS does (statements, ``RevisionId`` preconditions, errors), but not
enforced: every caller of the local service is already the stack's own signed principal, and
nothing evaluates IAM here. So ``lambda.add_permission(...)`` calls that deploy tools make
for triggers (S3, SNS, API Gateway, ...) work locally as on AWS.

A policy belongs to the function (``Qualifier`` absent) or to one version or alias. A change
makes a new ``RevisionId`` for what it belongs to (the function's, or the alias's), without
retiring any execution environment.

AWS references: https://docs.aws.amazon.com/lambda/latest/api/API_AddPermission.html,
https://docs.aws.amazon.com/lambda/latest/api/API_RemovePermission.html,
https://docs.aws.amazon.com/lambda/latest/api/API_GetPolicy.html.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from lambdarun.local.model import Function, Registry
from lambdarun.local.shapes import ApiError, Reply, json_body, ok, unknown_operation
from lambdarun.local.versions import check_revision


class ControlPlane(Protocol):
    registry: Registry

    def save(self) -> None: ...


def _principal(principal: str) -> Any:
    if principal == "*":
        return "*"
    if principal.endswith(".amazonaws.com") or principal.endswith(".amazonaws.com.cn"):
        return {"Service": principal}
    if re.fullmatch(r"\d{12}", principal):
        return {"AWS": f"arn:aws:iam::{principal}:root"}
    return {"AWS": principal}


def statement(req: Mapping[str, Any], resource: str) -> dict[str, Any]:
    """The policy statement of an AddPermission request, in AWS's shape."""
    out: dict[str, Any] = {
        "Sid": str(req.get("StatementId") or ""), "Effect": "Allow",
        "Principal": _principal(str(req.get("Principal") or "")),
        "Action": str(req.get("Action") or ""), "Resource": resource,
    }
    condition: dict[str, dict[str, str]] = {}
    if req.get("SourceAccount"):
        condition.setdefault("StringEquals", {})["AWS:SourceAccount"] = str(req["SourceAccount"])
    if req.get("PrincipalOrgID"):
        condition.setdefault("StringEquals", {})["aws:PrincipalOrgID"] = str(req["PrincipalOrgID"])
    if req.get("EventSourceToken"):
        condition.setdefault("StringEquals", {})["lambda:EventSourceToken"] = str(req["EventSourceToken"])
    if req.get("FunctionUrlAuthType"):
        condition.setdefault("StringEquals", {})["lambda:FunctionUrlAuthType"] = str(req["FunctionUrlAuthType"])
    if req.get("SourceArn"):
        condition.setdefault("ArnLike", {})["AWS:SourceArn"] = str(req["SourceArn"])
    if condition:
        out["Condition"] = condition
    return out


class Policies:
    """The policy operations of one control plane."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.registry = control.registry

    def route(self, method: str, name: str, qualifier: str | None, sub: str,
              query: Mapping[str, str], body: bytes) -> Reply:
        _, _, sid = sub.partition("/")
        if method == "POST" and not sid:
            return self.add(name, qualifier, json_body(body))
        if method == "GET" and not sid:
            return self.get(name, qualifier)
        if method == "DELETE" and sid:
            return self.remove(name, qualifier, sid, query.get("RevisionId"))
        raise unknown_operation(method, sub)

    def _target(self, name: str, qualifier: str | None) -> tuple[Function, str, Any]:
        """($LATEST, policy key, what owns the RevisionId: a Function or an alias)."""
        fn = self.registry.lookup(name)
        key = qualifier or ""
        with self.registry.lock:
            alias = fn.aliases.get(key) if key else None
            if alias is not None:
                return fn, key, alias
            if key in ("", "$LATEST"):
                return fn, key, fn
            version = fn.versions.get(key)
        if version is None:
            raise ApiError(404, "ResourceNotFoundException", f"Function not found: {fn.arn}:{key}")
        return fn, key, version

    def add(self, name: str, qualifier: str | None, req: dict[str, Any]) -> Reply:
        fn, key, owner = self._target(name, qualifier)
        sid = str(req.get("StatementId") or "")
        with self.registry.lock:
            check_revision(req.get("RevisionId"), owner.revision_id)
            statements = fn.policies.setdefault(key, [])
            if any(s["Sid"] == sid for s in statements):
                raise ApiError(409, "ResourceConflictException",
                               f"The statement id ({sid}) provided already exists. Please provide a new "
                               "statement id, or remove the existing statement.")
            added = statement(req, fn.arn if not key else f"{fn.arn}:{key}")
            statements.append(added)
            owner.revision_id = str(uuid.uuid4())
        self.control.save()
        return 201, json.dumps({"Statement": json.dumps(added)}).encode(), {}

    def get(self, name: str, qualifier: str | None) -> Reply:
        fn, key, owner = self._target(name, qualifier)
        with self.registry.lock:
            statements = list(fn.policies.get(key) or [])
            revision = owner.revision_id
        if not statements:
            raise ApiError(404, "ResourceNotFoundException", "The resource you requested does not exist.")
        policy = {"Version": "2012-10-17", "Id": "default", "Statement": statements}
        return ok({"Policy": json.dumps(policy), "RevisionId": revision})

    def remove(self, name: str, qualifier: str | None, sid: str, revision: str | None) -> Reply:
        fn, key, owner = self._target(name, qualifier)
        with self.registry.lock:
            check_revision(revision, owner.revision_id)
            statements = fn.policies.get(key) or []
            kept = [s for s in statements if s["Sid"] != sid]
            if len(kept) == len(statements):
                raise ApiError(404, "ResourceNotFoundException",
                               f"Statement {sid} is not found in resource policy.")
            if kept:
                fn.policies[key] = kept
            else:
                fn.policies.pop(key, None)
            owner.revision_id = str(uuid.uuid4())
        self.control.save()
        return 204, b"", {}
