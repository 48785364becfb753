"""The control plane: create, read, update and delete functions, their tags, reserved
concurrency and event-invoke config, and keeping them across restarts (through
:class:`~lambdarun.local.persist.ServiceState`).

Versions and aliases belong next to this module (their own one), not in it.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import structlog

from lambdarun.local.async_queue import AsyncQueue
from lambdarun.local.aws_clients import AwsClients
from lambdarun.local.function_code import materialise_code, remove_code
from lambdarun.local.interpreters import interpreter_for
from lambdarun.local.model import Function, Registry
from lambdarun.local.options import ServiceOptions, now_iso
from lambdarun.local.persist import ServiceState, remove_orphan_code
from lambdarun.local.scheduler import Scheduler
from lambdarun.local.shapes import ApiError, Reply, function_name, json_body, ok, unknown_operation
from lambdarun.local.validation import check_function_settings
from lambdarun.local.versions import check_revision, code_dirs, restore_versions, snapshot, versions_record

log = structlog.get_logger(__name__)


class ControlPlane:
    """The functions' configuration (the data plane runs them: :mod:`.invoke`)."""

    def __init__(self, options: ServiceOptions, registry: Registry, scheduler: Scheduler,
                 async_queue: AsyncQueue, clients: AwsClients, state: ServiceState | None) -> None:
        self.options = options
        self.registry = registry
        self.scheduler = scheduler
        self.async_queue = async_queue
        self.clients = clients
        self._state = state
        self._lock = registry.lock
        self._capacity = registry.capacity
        self._functions = registry.functions
        self._lookup = registry.lookup

    def _materialise_code(self, name: str, code: Mapping[str, Any]) -> tuple[Path, bool, str, int]:
        c = materialise_code(name, code, self.options.state_dir / "functions", self.clients)
        return c.directory, c.local, c.sha256, c.size

    def create_function(self, req: dict[str, Any]) -> Reply:
        check_function_settings(req, creating=True)
        name = req.get("FunctionName") or ""
        name, _ = function_name(name)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ApiError(400, "InvalidParameterValueException",
                           f"FunctionName {name!r} must be 1-64 letters, digits, hyphens or underscores.")
        if req.get("PackageType", "Zip") != "Zip":
            raise ApiError(400, "InvalidParameterValueException", "Only PackageType Zip is supported locally.")
        runtime = req.get("Runtime") or f"python{sys.version_info.major}.{sys.version_info.minor}"
        python = interpreter_for(runtime, self.options.python)  # refuses one that cannot run
        refuse_layers(req)
        handler = req.get("Handler")
        if not handler:
            raise ApiError(400, "InvalidParameterValueException", "Handler is required for Zip functions.")
        timeout = int(req.get("Timeout", 3))
        memory = int(req.get("MemorySize", 128))
        check_limits(timeout, memory)
        with self._lock:
            if name in self._functions:
                raise ApiError(409, "ResourceConflictException", f"Function already exist: {name}")
        code_dir, local, sha, size = self._materialise_code(name, req.get("Code") or {})
        fn = Function(
            name=name, handler=handler, runtime=runtime, role=req.get("Role", ""),
            timeout=timeout, memory_size=memory,
            environment=dict((req.get("Environment") or {}).get("Variables") or {}),
            description=req.get("Description", ""), code_dir=code_dir, local_code=local,
            code_sha256=sha, code_size=size, region=self.options.region,
            tags=dict(req.get("Tags") or {}), python=python,
            durable_config=durable_config(req["DurableConfig"]) if "DurableConfig" in req else None,
        )
        with self._lock:
            conflict = name in self._functions
            if not conflict:
                self._functions[name] = fn
        if conflict:
            if not local:
                remove_code(code_dir)
            raise ApiError(409, "ResourceConflictException", f"Function already exist: {name}")
        if req.get("Publish"):
            return 201, json.dumps(self.publish_now(fn)).encode(), {}
        self.save()
        log.debug("function created", function=name, code_dir=str(code_dir))
        return 201, json.dumps(fn.configuration()).encode(), {}

    def publish_now(self, fn: Function) -> dict[str, Any]:
        """``Publish=True`` of CreateFunction/UpdateFunctionCode: a new version, answered."""
        with self._lock:
            fn.last_version += 1
            version = snapshot(fn, fn.last_version, fn.description)
            fn.versions[version.version] = version
        self.save()
        return version.configuration()

    def drop_code(self, fn: Function, directory: Path) -> None:
        """Remove an extracted code directory that neither ``fn`` nor a version of it uses."""
        with self._lock:
            used = directory in code_dirs(fn)
        if not used:
            # running environments keep their cwd open; removing the files is safe on POSIX
            remove_code(directory)

    def get_function(self, name: str, qualifier: str | None,
                     location: Callable[[Function], str] | None = None) -> dict[str, Any]:
        """GetFunction; ``location`` makes ``Code.Location`` (see :mod:`.code_location`)."""
        fn = self._lookup(name, qualifier)
        out: dict[str, Any] = {
            "Configuration": fn.configuration(),
            "Code": {"RepositoryType": "S3",
                     "Location": location(fn) if location else fn.code_dir.as_uri()},
            "Tags": dict(fn.tags),
        }
        if fn.reserved is not None:
            out["Concurrency"] = {"ReservedConcurrentExecutions": fn.reserved}
        return out

    def list_functions(self, query: dict[str, str]) -> Reply:
        with self._lock:
            names = sorted(self._functions)
            fns = [self._functions[n] for n in names]
            if query.get("FunctionVersion") == "ALL":  # every published version too
                fns = [v for f in fns for v in (f, *sorted(f.versions.values(), key=lambda v: int(v.version)))]
        start = int(query.get("Marker") or 0)
        size = min(int(query.get("MaxItems") or 50), 50)
        page = fns[start:start + size]
        out: dict[str, Any] = {"Functions": [f.configuration() for f in page]}
        if start + size < len(fns):
            out["NextMarker"] = str(start + size)
        return ok(out)

    def _retire(self, fn: Function) -> None:
        """After a code/config change: new invocations get fresh environments."""
        with self._lock:
            fn.generation += 1
            fn.revision_id = str(uuid.uuid4())
            fn.last_modified = now_iso()
        self.scheduler.retire(fn, "updated")

    def update_configuration(self, name: str, req: dict[str, Any]) -> dict[str, Any]:
        fn = self._lookup(name)
        refuse_layers(req)
        check_function_settings(req, creating=False, local_code=fn.local_code)
        check_revision(req.get("RevisionId"), fn.revision_id)
        timeout = int(req.get("Timeout", fn.timeout))
        memory = int(req.get("MemorySize", fn.memory_size))
        check_limits(timeout, memory)
        python = interpreter_for(req["Runtime"], self.options.python) if "Runtime" in req else fn.python
        durable = None
        if "DurableConfig" in req:
            if fn.durable_config is None:
                raise ApiError(400, "InvalidParameterValueException",
                               "DurableConfig can only be set when the function is created: "
                               "create a new function with DurableConfig.")
            durable = durable_config(req["DurableConfig"])
        with self._lock:
            fn.timeout, fn.memory_size, fn.python = timeout, memory, python
            if durable is not None:
                fn.durable_config = durable
            if "Environment" in req:
                fn.environment = dict((req.get("Environment") or {}).get("Variables") or {})
            for key, attr in (("Handler", "handler"), ("Description", "description"),
                              ("Role", "role"), ("Runtime", "runtime")):
                if key in req:
                    setattr(fn, attr, req[key])
        self._retire(fn)
        self.save()
        return fn.configuration()

    def update_code(self, name: str, req: dict[str, Any]) -> dict[str, Any]:
        fn = self._lookup(name)
        check_revision(req.get("RevisionId"), fn.revision_id)
        if req.get("DryRun"):
            return fn.configuration()
        code_dir, local, sha, size = self._materialise_code(name, req)
        old = None if fn.local_code else fn.code_dir
        with self._lock:
            fn.code_dir, fn.local_code, fn.code_sha256, fn.code_size = code_dir, local, sha, size
        self._retire(fn)
        self.save()
        if old is not None and old != code_dir:
            self.drop_code(fn, old)  # a published version may still use it
        if req.get("Publish"):
            return self.publish_now(fn)
        return fn.configuration()

    def delete_function(self, name: str) -> Reply:
        fn = self._lookup(name)
        with self._lock:
            self._functions.pop(name, None)
            fn.deleted = True
            forgotten = [e.request_id for e in (*fn.async_queue, *fn.retrying)]
            fn.async_queue.clear()
            self._capacity.notify_all()
        self.save()
        self.async_queue.forget_events(forgotten)
        self.scheduler.retire(fn, "deleted")
        with self._lock:
            versions = list(fn.versions.values())
        for version in versions:
            version.deleted = True
            self.async_queue.forget_events([e.request_id for e in (*version.async_queue, *version.retrying)])
            version.async_queue.clear()
            self.scheduler.retire(version, "deleted")
        if not fn.local_code:
            # its own code only: a function created anew under this name has another code-<id>
            for directory in {fn.code_dir, *(v.code_dir for v in versions)}:
                remove_code(directory)
            try:
                fn.code_dir.parent.rmdir()
            except OSError:
                pass
        return 204, b"", {}

    def tags(self, method: str, arn: str, body: bytes, raw_query: str) -> Reply:
        """ListTags / TagResource / UntagResource of a function (by ARN)."""
        if ":function:" not in arn:
            raise ApiError(400, "InvalidParameterValueException",
                           f"The local Lambda service tags functions only, not {arn!r}.")
        name, qualifier = function_name(arn)
        if qualifier:
            raise ApiError(400, "InvalidParameterValueException",
                           "Tags on function aliases and versions are not supported. Please specify a function ARN.")
        fn = self._lookup(name, qualifier)
        if method == "GET":
            with self._lock:
                return ok({"Tags": dict(fn.tags)})
        if method == "POST":
            new = json_body(body).get("Tags") or {}
            if not isinstance(new, dict):
                raise ApiError(400, "InvalidParameterValueException", "Tags must be a map of strings.")
            with self._lock:
                fn.tags.update({str(k): str(v) for k, v in new.items()})
            self.save()
            return 204, b"", {}
        if method == "DELETE":
            keys = parse_qs(raw_query).get("tagKeys", [])
            with self._lock:
                for key in keys:
                    fn.tags.pop(key, None)
            self.save()
            return 204, b"", {}
        raise unknown_operation(method, "tags")

    def concurrency(self, method: str, name: str, body: bytes) -> Reply:
        fn = self._lookup(name)
        if method == "PUT":
            n = int(json_body(body).get("ReservedConcurrentExecutions", -1))
            if n < 0 or n > self.options.concurrency_limit:
                raise ApiError(400, "InvalidParameterValueException",
                               f"ReservedConcurrentExecutions must be between 0 and {self.options.concurrency_limit}.")
            with self._capacity:
                fn.reserved = n
                self._capacity.notify_all()
            self.save()
            return ok({"ReservedConcurrentExecutions": n})
        if method == "DELETE":
            with self._capacity:
                fn.reserved = None
                self._capacity.notify_all()
            self.save()
            return 204, b"", {}
        if method == "GET":
            return ok({} if fn.reserved is None else {"ReservedConcurrentExecutions": fn.reserved})
        raise unknown_operation(method, "concurrency")

    def event_invoke_config(self, method: str, name: str, qualifier: str | None, sub: str,
                            body: bytes) -> Reply:
        """Put/Update/Get/Delete/ListFunctionEventInvokeConfig(s)."""
        fn = self._lookup(name, qualifier)

        def shaped(cfg: dict[str, Any]) -> dict[str, Any]:
            return {"FunctionArn": f"{fn.arn}:$LATEST", **cfg}

        if sub == "/list" and method == "GET":
            items = [shaped(fn.event_invoke_config)] if fn.event_invoke_config else []
            return ok({"FunctionEventInvokeConfigs": items})
        if method in ("PUT", "POST"):
            req = json_body(body)
            base = {} if method == "PUT" else dict(fn.event_invoke_config or {})
            if method == "POST" and fn.event_invoke_config is None:
                raise ApiError(404, "ResourceNotFoundException",
                               f"The function {fn.arn} doesn't have an EventInvokeConfig")
            for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig"):
                if key in req:
                    base[key] = req[key]
            retries = base.get("MaximumRetryAttempts")
            if retries is not None and not 0 <= int(retries) <= 2:
                raise ApiError(400, "InvalidParameterValueException", "MaximumRetryAttempts must be 0, 1 or 2.")
            age = base.get("MaximumEventAgeInSeconds")
            if age is not None and not 60 <= int(age) <= 21600:
                raise ApiError(400, "InvalidParameterValueException",
                               "MaximumEventAgeInSeconds must be between 60 and 21600.")
            for which in ("OnSuccess", "OnFailure"):
                arn = ((base.get("DestinationConfig") or {}).get(which) or {}).get("Destination")
                if arn and ":lambda:" not in arn and ":sqs:" not in arn:
                    raise ApiError(400, "InvalidParameterValueException",
                                   f"The local Lambda service delivers {which} records to Lambda "
                                   f"functions and SQS queues only, not {arn}.")
            base["LastModified"] = time.time()
            fn.event_invoke_config = base
            self.save()
            return ok(shaped(base))
        if method == "GET":
            if fn.event_invoke_config is None:
                raise ApiError(404, "ResourceNotFoundException",
                               f"The function {fn.arn} doesn't have an EventInvokeConfig")
            return ok(shaped(fn.event_invoke_config))
        if method == "DELETE":
            fn.event_invoke_config = None
            self.save()
            return 204, b"", {}
        raise unknown_operation(method, "event-invoke-config")

    # -- kept across restarts (see lambdarun.local.persist) ----------------------------

    def save(self) -> None:
        """Write the control plane to the state directory (after every change)."""
        if self._state is None:
            return

        def snapshot() -> list[dict[str, Any]]:
            with self._lock:
                return [function_record(f) for f in self._functions.values()]

        self._state.functions.save(snapshot)

    def _restored_interpreter(self, fn: Function) -> str | None:
        """The interpreter of a restored function; when its Runtime's is gone (the service's
        Python was upgraded, say) it is kept, on the service's own, and that is logged."""
        try:
            return interpreter_for(fn.runtime, self.options.python)
        except ApiError as e:
            log.warning("restored function runs on the service's interpreter, not its Runtime's",
                        function=fn.name, version=fn.version, error=e.message)
            return None

    def restore(self) -> None:
        """Recreate the saved functions (before the API serves). A saved function whose
        code is gone, or whose record is invalid, is left out and logged."""
        assert self._state is not None
        code_root = (self.options.state_dir / "functions").resolve()
        for doc in self._state.functions.load():
            try:
                fn = function_from_record(doc, self.options.region)
                for one in (fn, *fn.versions.values()):
                    one.python = self._restored_interpreter(one)
                    if not one.code_dir.is_dir():
                        raise ValueError(f"its code directory {one.code_dir} is gone")
                    resolved = one.code_dir.resolve()
                    if not one.local_code and (resolved.parent.parent != code_root
                                               or not resolved.name.startswith("code-")):
                        raise ValueError(f"its code directory {one.code_dir} is not one of "
                                         f"{code_root}/<name>/code-<id>")
            except (KeyError, TypeError, ValueError, ApiError) as e:
                log.warning("saved function not restored", function=doc.get("name"),
                            error=getattr(e, "message", None) or str(e))
                continue
            self._functions[fn.name] = fn
        if self._functions:
            log.info("functions restored", count=len(self._functions))
        self.save()  # drop what was left out
        # extracted code no restored function uses (deleted or updated before a crash)
        remove_orphan_code(code_root, [d for f in self._functions.values() if not f.local_code
                                       for d in code_dirs(f)])


RECORD_FIELDS = ("name", "handler", "runtime", "role", "timeout", "memory_size", "environment",
                  "description", "local_code", "code_sha256", "code_size", "tags", "reserved",
                  "revision_id", "last_modified", "event_invoke_config", "version", "durable_config")


def function_record(fn: Function) -> dict[str, Any]:
    """The persistent fields of ``fn`` (see :class:`~lambdarun.local.persist.FunctionStore`)."""
    out = {k: getattr(fn, k) for k in RECORD_FIELDS}
    out["code_dir"] = str(fn.code_dir)
    out["environment"] = dict(fn.environment)
    out["tags"] = dict(fn.tags)
    if fn.version == "$LATEST":
        out.update(versions_record(fn, function_record))
    return out


def function_from_record(doc: Mapping[str, Any], region: str) -> Function:
    """A function from a saved record, validated like CreateFunction's input."""
    name = str(doc["name"])
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ValueError(f"invalid function name {name!r}")
    timeout, memory = int(doc["timeout"]), int(doc["memory_size"])
    check_limits(timeout, memory)
    environment, tags = doc.get("environment") or {}, doc.get("tags") or {}
    if not isinstance(environment, dict) or not isinstance(tags, dict):
        raise ValueError("environment and tags must be maps")
    reserved = doc.get("reserved")
    if reserved is not None and int(reserved) < 0:
        raise ValueError(f"reserved concurrency {reserved!r} is negative")
    eic = doc.get("event_invoke_config")
    if eic is not None and not isinstance(eic, dict):
        raise ValueError("event_invoke_config must be a map")
    code_dir = Path(str(doc["code_dir"]))
    if not code_dir.is_absolute():
        raise ValueError(f"code directory {code_dir} is not absolute")
    fn = Function(
        name=name, handler=str(doc["handler"]), runtime=str(doc["runtime"]), role=str(doc.get("role", "")),
        timeout=timeout, memory_size=memory,
        environment={str(k): str(v) for k, v in environment.items()},
        description=str(doc.get("description", "")), code_dir=code_dir,
        local_code=bool(doc["local_code"]), code_sha256=str(doc["code_sha256"]),
        code_size=int(doc["code_size"]), region=region,
        tags={str(k): str(v) for k, v in tags.items()},
        reserved=None if reserved is None else int(reserved),
        revision_id=str(doc.get("revision_id") or uuid.uuid4()),
        last_modified=str(doc.get("last_modified") or now_iso()),
        event_invoke_config=eic, version=str(doc.get("version") or "$LATEST"),
        durable_config=None if doc.get("durable_config") is None else durable_config(doc["durable_config"]),
    )
    if fn.version == "$LATEST":
        restore_versions(fn, doc, lambda saved: function_from_record(saved, region))
    return fn


def durable_config(raw: Any) -> dict[str, Any]:
    """A validated ``DurableConfig`` (RetentionPeriodInDays defaults to 14, as on AWS)."""
    if not isinstance(raw, Mapping):
        raise ApiError(400, "InvalidParameterValueException", "DurableConfig must be a structure.")
    out: dict[str, Any] = {}
    timeout = raw.get("ExecutionTimeout")
    if timeout is None:
        raise ApiError(400, "InvalidParameterValueException",
                       "DurableConfig.ExecutionTimeout is required (1 to 31622400 seconds).")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 31_622_400:
        raise ApiError(400, "ValidationException",
                       f"1 validation error detected: Value '{timeout}' at 'durableConfig.executionTimeout' "
                       "failed to satisfy constraint: Member must have value between 1 and 31622400")
    out["ExecutionTimeout"] = timeout
    retention = raw.get("RetentionPeriodInDays", 14)
    if isinstance(retention, bool) or not isinstance(retention, int) or not 1 <= retention <= 90:
        raise ApiError(400, "ValidationException",
                       f"1 validation error detected: Value '{retention}' at 'durableConfig.retentionPeriodInDays' "
                       "failed to satisfy constraint: Member must have value between 1 and 90")
    out["RetentionPeriodInDays"] = retention
    if raw.get("KMSKeyArn"):
        out["KMSKeyArn"] = str(raw["KMSKeyArn"])
    return out


def refuse_layers(req: Mapping[str, Any]) -> None:
    if req.get("Layers"):
        raise ApiError(400, "InvalidParameterValueException",
                       "Layers are not supported by the local Lambda service: functions run on the "
                       "service's Python environment, so install the layer's packages there.")


def check_limits(timeout: int, memory: int) -> None:
    if not 1 <= timeout <= 900:
        raise ApiError(400, "InvalidParameterValueException", "Timeout must be between 1 and 900 seconds.")
    if not 128 <= memory <= 10240:
        raise ApiError(400, "InvalidParameterValueException", "MemorySize must be between 128 and 10240 MB.")
