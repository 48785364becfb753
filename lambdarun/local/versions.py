"""Function versions and aliases: PublishVersion, ListVersionsByFunction, DeleteFunction with a
``Qualifier``, Create/Get/Update/Delete/ListAliases, weighted alias routing, and the
``RevisionId`` preconditions of every control-plane change.

A published version is a :class:`~lambdarun.local.model.Function` of its own (an immutable
snapshot of ``$LATEST``'s code and configuration, ``version="1"``, ...), kept in
``$LATEST``'s ``versions``; it gets its own execution environments, so an environment of
version 1 never serves ``$LATEST``. An alias (:class:`Alias`) names a version, or two with
``RoutingConfig.AdditionalVersionWeights``; :meth:`Registry.route` picks one per Invoke.

AWS references: https://docs.aws.amazon.com/lambda/latest/dg/configuration-versions.html,
https://docs.aws.amazon.com/lambda/latest/dg/configuration-aliases.html,
https://docs.aws.amazon.com/lambda/latest/api/API_PublishVersion.html,
https://docs.aws.amazon.com/lambda/latest/api/API_CreateAlias.html.
"""

from __future__ import annotations

import collections
import json
import random
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import structlog

from lambdarun.local.model import Function, Registry
from lambdarun.local.options import now_iso
from lambdarun.local.shapes import ApiError, Reply, json_body, ok, unknown_operation


class ControlPlane(Protocol):
    """What this module needs of :class:`~lambdarun.local.control.ControlPlane`."""

    registry: Registry
    scheduler: Any
    async_queue: Any

    def save(self) -> None: ...

    def drop_code(self, fn: Function, directory: Path) -> None: ...

log = structlog.get_logger(__name__)

#: configuration a version freezes (a publish with none of them changed returns the last version)
SNAPSHOT_FIELDS = ("handler", "runtime", "role", "timeout", "memory_size", "environment", "code_sha256")
#: the message of a stale ``RevisionId`` (412 ``PreconditionFailedException``)
STALE_REVISION = ("The Revision Id provided does not match the latest Revision Id. "
                  "Call the GetFunction/GetAlias API to retrieve the latest Revision Id")


@attrs.define(eq=False)
class Alias:
    """A function's alias: the version it names, and optionally a second one with a weight."""

    name: str
    function_version: str
    description: str = ""
    #: {version: weight 0..1}: the share of invocations that go to that other version
    weights: dict[str, float] = attrs.field(factory=dict)
    revision_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))

    def pick_version(self) -> str:
        for version, weight in self.weights.items():
            if random.random() < weight:  # noqa: S311 - traffic shifting, not security
                return version
        return self.function_version

    def configuration(self, fn: Function) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AliasArn": f"{fn.arn}:{self.name}", "Name": self.name,
            "FunctionVersion": self.function_version, "Description": self.description,
            "RevisionId": self.revision_id,
        }
        if self.weights:
            out["RoutingConfig"] = {"AdditionalVersionWeights": dict(self.weights)}
        return out

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "function_version": self.function_version,
                "description": self.description, "weights": dict(self.weights),
                "revision_id": self.revision_id}


def check_revision(given: Any, current: str) -> None:
    """412 when a request's ``RevisionId`` is not the resource's current one."""
    if given not in (None, "") and given != current:
        raise ApiError(412, "PreconditionFailedException", STALE_REVISION)


def snapshot(fn: Function, number: int, description: str) -> Function:
    """Version ``number`` of ``fn`` (its ``$LATEST``): same code and configuration, fresh
    scheduling state, no versions or aliases of its own."""
    return attrs.evolve(
        fn, version=str(number), description=description, environment=dict(fn.environment),
        tags=fn.tags, reserved=None, generation=0, revision_id=str(uuid.uuid4()),
        last_modified=now_iso(), busy=0, deleted=False, async_queue=collections.deque(),
        async_workers=0, event_invoke_config=None, inflight=set(), retrying=set(),
        versions={}, aliases={}, last_version=0, policies={},
    )


class Versions:
    """The version and alias operations of one control plane."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.registry = control.registry

    def route(self, method: str, name: str, qualifier: str | None, sub: str,
              query: Mapping[str, str], body: bytes) -> Reply:
        what, _, alias = sub.partition("/")
        if qualifier not in (None, ""):
            raise ApiError(400, "InvalidParameterValueException",
                           "Qualifier is not supported for this operation: name the function "
                           "without a version or alias.")
        if what == "versions" and not alias:
            if method == "POST":
                return self.publish(name, json_body(body))
            if method == "GET":
                return self.list_versions(name, query)
        if what == "aliases" and not alias:
            if method == "POST":
                return self.create_alias(name, json_body(body))
            if method == "GET":
                return self.list_aliases(name, query)
        if what == "aliases" and alias:
            if method == "GET":
                return ok(self._alias(name, alias)[1].configuration(self._latest(name)))
            if method == "PUT":
                return self.update_alias(name, alias, json_body(body))
            if method == "DELETE":
                return self.delete_alias(name, alias, query)
        raise unknown_operation(method, sub)

    def _latest(self, name: str) -> Function:
        return self.registry.lookup(name)

    def _alias(self, name: str, alias: str) -> tuple[Function, Alias]:
        fn = self._latest(name)
        with self.registry.lock:
            found = fn.aliases.get(alias)
        if found is None:
            raise ApiError(404, "ResourceNotFoundException",
                           f"Cannot find alias arn: {fn.arn}:{alias}")
        return fn, found

    # -- versions ------------------------------------------------------------------------

    def publish(self, name: str, req: dict[str, Any]) -> Reply:
        fn = self._latest(name)
        with self.registry.lock:
            check_revision(req.get("RevisionId"), fn.revision_id)
            sha = req.get("CodeSha256")
            if sha not in (None, "") and sha != fn.code_sha256:
                raise ApiError(400, "InvalidParameterValueException",
                               f"CodeSHA256 ({sha}) is different from current CodeSHA256 in "
                               f"$LATEST ({fn.code_sha256}). Please try again with current CodeSHA256.")
            last = fn.versions.get(str(fn.last_version))
            if last is not None and all(getattr(last, f) == getattr(fn, f) for f in SNAPSHOT_FIELDS):
                # nothing changed since the last version: Lambda returns that one
                return 201, json.dumps(last.configuration()).encode(), {}
            fn.last_version += 1
            version = snapshot(fn, fn.last_version, str(req.get("Description", fn.description)))
            fn.versions[version.version] = version
        self.control.save()
        log.debug("version published", function=name, version=version.version)
        return 201, json.dumps(version.configuration()).encode(), {}

    def list_versions(self, name: str, query: Mapping[str, str]) -> Reply:
        fn = self._latest(name)
        with self.registry.lock:
            items = [fn, *sorted(fn.versions.values(), key=lambda v: int(v.version))]
            configs = [f.configuration() for f in items]
        return ok(_page(configs, query, "Versions"))

    def delete_version(self, name: str, qualifier: str) -> Reply:
        """DeleteFunction with a ``Qualifier``: that version only."""
        fn = self._latest(name)
        if qualifier == "$LATEST":
            raise ApiError(400, "InvalidParameterValueException",
                           "$LATEST version cannot be deleted without deleting the function.")
        with self.registry.lock:
            if qualifier in fn.aliases:
                raise ApiError(400, "InvalidParameterValueException",
                               "Deletion of aliases is not supported through DeleteFunction: use DeleteAlias.")
            version = fn.versions.get(qualifier)
            if version is None:
                raise ApiError(404, "ResourceNotFoundException",
                               f"Function not found: {fn.arn}:{qualifier}")
            users = sorted(a.name for a in fn.aliases.values()
                           if a.function_version == qualifier or qualifier in a.weights)
            if users:
                raise ApiError(409, "ResourceConflictException",
                               f"Unable to delete version because the following aliases reference it: "
                               f"[{', '.join(users)}]")
            del fn.versions[qualifier]
            fn.policies.pop(qualifier, None)
            version.deleted = True
            forgotten = [e.request_id for e in (*version.async_queue, *version.retrying)]
            version.async_queue.clear()
            self.registry.capacity.notify_all()
        self.control.save()
        self.control.async_queue.forget_events(forgotten)
        self.control.scheduler.retire(version, "deleted")
        if not version.local_code:
            self.control.drop_code(fn, version.code_dir)
        return 204, b"", {}

    # -- aliases -------------------------------------------------------------------------

    def _target(self, fn: Function, version: Any, weights: Any) -> tuple[str, dict[str, float]]:
        """A checked (FunctionVersion, AdditionalVersionWeights)."""
        version = str(version or "")
        if version != "$LATEST" and version not in fn.versions:
            raise ApiError(404, "ResourceNotFoundException",
                           f"Function not found: {fn.arn}:{version}")
        if weights is None:
            return version, {}
        if not isinstance(weights, Mapping):
            raise ApiError(400, "InvalidParameterValueException",
                           "RoutingConfig.AdditionalVersionWeights must be a map of version to weight.")
        if len(weights) > 1:
            raise ApiError(400, "InvalidParameterValueException",
                           "Number of items in AdditionalVersionWeights cannot be greater than 1")
        out: dict[str, float] = {}
        for other, weight in weights.items():
            if not re.fullmatch(r"[0-9]+", str(other)):
                raise ApiError(400, "InvalidParameterValueException",
                               f"Invalid function version {other}. Function version {other} is not "
                               "a published version: alias routing needs two published versions.")
            if version == "$LATEST":
                raise ApiError(400, "InvalidParameterValueException",
                               "$LATEST is not supported for an alias pointing to more than 1 version")
            if str(other) == version:
                raise ApiError(400, "InvalidParameterValueException",
                               f"Invalid function version {other}. Function version {other} is already "
                               "included in routing configuration.")
            if str(other) not in fn.versions:
                raise ApiError(404, "ResourceNotFoundException",
                               f"Function not found: {fn.arn}:{other}")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0.0 <= weight <= 1.0:
                raise ApiError(400, "InvalidParameterValueException",
                               f"Weight of version {other} must be a number between 0.0 and 1.0, got {weight!r}.")
            out[str(other)] = float(weight)
        return version, out

    def create_alias(self, name: str, req: dict[str, Any]) -> Reply:
        fn = self._latest(name)
        alias_name = str(req.get("Name") or "")
        with self.registry.lock:
            if alias_name in fn.aliases:
                raise ApiError(409, "ResourceConflictException",
                               f"Alias already exists: {fn.arn}:{alias_name}")
            version, weights = self._target(fn, req.get("FunctionVersion"),
                                            (req.get("RoutingConfig") or {}).get("AdditionalVersionWeights"))
            alias = Alias(alias_name, version, str(req.get("Description") or ""), weights)
            fn.aliases[alias_name] = alias
            out = alias.configuration(fn)
        self.control.save()
        return 201, json.dumps(out).encode(), {}

    def update_alias(self, name: str, alias_name: str, req: dict[str, Any]) -> Reply:
        fn, alias = self._alias(name, alias_name)
        with self.registry.lock:
            check_revision(req.get("RevisionId"), alias.revision_id)
            routing = req.get("RoutingConfig")
            version, weights = self._target(
                fn, req.get("FunctionVersion", alias.function_version),
                (routing or {}).get("AdditionalVersionWeights") if routing is not None else alias.weights)
            alias.function_version, alias.weights = version, weights
            if "Description" in req:
                alias.description = str(req["Description"] or "")
            alias.revision_id = str(uuid.uuid4())
            out = alias.configuration(fn)
        self.control.save()
        return ok(out)

    def delete_alias(self, name: str, alias_name: str, query: Mapping[str, str]) -> Reply:
        fn = self._latest(name)
        with self.registry.lock:
            # DeleteAlias of an alias that does not exist succeeds on AWS (204)
            if fn.aliases.pop(alias_name, None) is not None:
                fn.policies.pop(alias_name, None)
        self.control.save()
        return 204, b"", {}

    def list_aliases(self, name: str, query: Mapping[str, str]) -> Reply:
        fn = self._latest(name)
        wanted = query.get("FunctionVersion")
        with self.registry.lock:
            configs = [a.configuration(fn) for n, a in sorted(fn.aliases.items())
                       if wanted in (None, "") or a.function_version == wanted]
        return ok(_page(configs, query, "Aliases"))


def _page(items: list[dict[str, Any]], query: Mapping[str, str], key: str) -> dict[str, Any]:
    try:
        start = int(query.get("Marker") or 0)
        size = min(int(query.get("MaxItems") or 50), 10_000)
    except ValueError as e:
        raise ApiError(400, "InvalidParameterValueException", f"Invalid Marker or MaxItems: {e}") from e
    out: dict[str, Any] = {key: items[start:start + size]}
    if start + size < len(items):
        out["NextMarker"] = str(start + size)
    return out


# -- kept across restarts (with the function's record, see ControlPlane.save) -------------

def versions_record(fn: Function, record: Any) -> dict[str, Any]:
    """The versions and aliases of ``fn`` for its saved record; ``record`` saves one version."""
    return {"last_version": fn.last_version,
            "versions": [record(v) for v in fn.versions.values()],
            "aliases": [a.record() for a in fn.aliases.values()],
            "policies": {k: [dict(s) for s in v] for k, v in fn.policies.items()}}


def restore_versions(fn: Function, doc: Mapping[str, Any], load: Any) -> None:
    """Put a saved record's versions (each through ``load``) and aliases back on ``fn``."""
    fn.last_version = int(doc.get("last_version") or 0)
    for saved in doc.get("versions") or []:
        version = load(saved)
        if not re.fullmatch(r"[0-9]+", version.version) or int(version.version) > fn.last_version:
            raise ValueError(f"invalid version {version.version!r}")
        version.tags = fn.tags
        fn.versions[version.version] = version
    for saved in doc.get("aliases") or []:
        alias = Alias(name=str(saved["name"]), function_version=str(saved["function_version"]),
                      description=str(saved.get("description", "")),
                      weights={str(k): float(v) for k, v in (saved.get("weights") or {}).items()},
                      revision_id=str(saved.get("revision_id") or uuid.uuid4()))
        for target in (alias.function_version, *alias.weights):
            if target != "$LATEST" and target not in fn.versions:
                raise ValueError(f"alias {alias.name} names a missing version {target}")
        fn.aliases[alias.name] = alias
    policies = doc.get("policies") or {}
    if not isinstance(policies, Mapping) or not all(
            isinstance(v, list) and all(isinstance(s, Mapping) and "Sid" in s for s in v) for v in policies.values()):
        raise ValueError("policies must map a qualifier to a list of statements")
    fn.policies = {str(k): [dict(s) for s in v] for k, v in policies.items()}


def code_dirs(fn: Function) -> list[Any]:
    """Every code directory ``fn`` and its versions use."""
    return [fn.code_dir, *(v.code_dir for v in fn.versions.values())]


__all__ = ["Alias", "Versions", "check_revision", "snapshot", "versions_record", "restore_versions",
           "code_dirs", "STALE_REVISION"]
