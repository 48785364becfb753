"""lambdarun's own endpoints next to the Lambda API (``/_lambdarun/...``, used by the
dashboard and the backends): functions with their environments, invocation records,
stopping invocations by marker, health. See the README's "Extension API"."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote

import structlog

from lambdarun.local.async_queue import AsyncQueue
from lambdarun.local.model import Registry
from lambdarun.local.options import CANCELLED_ERROR, STOP_MARKER_KEY, ServiceOptions, now_iso
from lambdarun.local.records import RecordBook
from lambdarun.local.scheduler import Scheduler
from lambdarun.local.shapes import ApiError, Reply, function_name, json_body, ok, unknown_operation

log = structlog.get_logger(__name__)


class ExtensionApi:
    """The ``/_lambdarun/`` routes and what they show or do."""

    def __init__(self, options: ServiceOptions, registry: Registry, scheduler: Scheduler,
                 async_queue: AsyncQueue, records: RecordBook) -> None:
        self.options = options
        self.registry = registry
        self.scheduler = scheduler
        self.async_queue = async_queue
        self.records = records
        self._lock = registry.lock

    def route(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
        """lambdarun's own endpoints next to the Lambda API (see the README)."""
        parts = path.strip("/").split("/")[1:]
        if method == "GET" and parts == ["functions"]:
            return ok({"functions": self.functions_view()})
        if method == "GET" and parts == ["invocations"]:
            return ok(self.records.invocations_view(query))
        if method == "GET" and len(parts) == 2 and parts[0] == "invocations":
            return ok(self.records.invocation_detail(unquote(parts[1])))
        if method == "POST" and len(parts) == 3 and parts[0] == "functions" and parts[2] == "stop":
            marker = json_body(body).get("marker")
            if not isinstance(marker, str) or not marker:
                raise ApiError(400, "InvalidParameterValueException",
                               'The body must be {"marker": "<ClientContext custom.lambdarun_attempt>"}.')
            return ok(self.stop_invocations(function_name(parts[1])[0], marker))
        if path == "/_lambdarun/health" and method == "GET":
            return ok({"pid": os.getpid(), "url": self.scheduler.api_url,
                       "environments": self.scheduler.environment_pids(),
                       "concurrency_limit": self.options.concurrency_limit})
        raise unknown_operation(method, path)

    def stop_invocations(self, name: str, marker: str) -> dict[str, list[str]]:
        """Stop ``name``'s invocations whose ClientContext has ``custom.lambdarun_attempt ==
        marker``: a running one fails with ``Runtime.Cancelled`` and its environment is killed
        (process group, SIGKILL); a queued or retry-waiting Event is dropped (no retry, no
        destination). Returns ``{"stopped": [request ids], "dropped": [request ids]}``."""
        fn = self.registry.lookup(name)
        with self._lock:
            dropped = [e for e in fn.async_queue if e.marker == marker]
            for event in dropped:
                fn.async_queue.remove(event)
            waiting = [e for e in fn.retrying if e.marker == marker]
            for event in waiting:
                fn.retrying.discard(event)
            dropped += waiting
            for event in dropped:
                event.cancelled = True
            running = [inv for inv in fn.inflight if inv.marker == marker]
        stopped = []
        for inv in running:
            if not inv.cancel(marker):
                continue  # it finished first
            stopped.append(inv.request_id)
            env = inv.env
            if env is not None:
                env.write_log(f"{now_iso()} {inv.request_id} Invocation stopped "
                              f"({STOP_MARKER_KEY} {marker})\n")
                env.kill("stopped")
        self.async_queue.forget_events([e.request_id for e in dropped])
        for event in dropped:
            rec = event.record
            if rec is not None:
                rec.status, rec.error_type = "failed", CANCELLED_ERROR
                rec.error_message = f"Event stopped while queued ({STOP_MARKER_KEY} {marker})"
        if stopped or dropped:
            log.info("invocations stopped", function=name, marker=marker, stopped=stopped,
                     dropped=[e.request_id for e in dropped])
        return {"stopped": stopped, "dropped": [e.request_id for e in dropped]}

    def functions_view(self) -> list[dict[str, Any]]:
        """``GET /_lambdarun/functions``: every function with its environments."""
        with self._lock:  # one consistent view (the lock is reentrant)
            fns = self.registry.snapshot()
            envs = self.scheduler.live_environments()
            out = []
            for fn in fns:
                environments = [
                    {
                        "id": e.id,
                        "pid": e.pid,
                        "state": ("cold" if not e.initialized.is_set()
                                  else "busy" if e.in_use else "warm"),
                        "started_at": e.started_at,
                        "invocations": e.invocations,
                    }
                    for e in sorted(envs, key=lambda e: e.started_at)
                    if e.function is fn
                ]
                out.append({
                    "name": fn.name,
                    "handler": fn.handler,
                    "runtime": fn.runtime,
                    "timeout": fn.timeout,
                    "memory_size": fn.memory_size,
                    "reserved_concurrency": fn.reserved,
                    "environments": environments,
                    "concurrency_in_use": fn.busy,
                    # the Event queue: waiting, waiting out a retry delay, and the workers
                    # still taking or deciding one (all 0: every Event is run and decided)
                    "events": {"queued": len(fn.async_queue), "retrying": len(fn.retrying),
                               "workers": fn.async_workers},
                    "code": "directory" if fn.local_code else "zip",
                    # LAMBDA_TASK_ROOT (Code.Location is a download URL, as on AWS)
                    "task_root": str(fn.code_dir),
                })
        return out
