"""The local Lambda service's extension seam: the host it hands to plugins' API families
(hook ``lambdarun_lambda_service_extensions``) and the loading of those extensions.

An extension (e.g. the durable-execution API of ``lambdarun-durable``) gets requests the
service does not serve itself (:meth:`~lambdarun.local.api.LambdaApi.route`) and is offered
every ``Invoke`` first (:meth:`~lambdarun.local.invoke.Invoker.invoke`). It reaches the
service only through :class:`ServiceHost`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from lambdarun.local.model import Invocation, Registry
from lambdarun.local.options import ACCOUNT_ID
from lambdarun.local.records import RecordBook
from lambdarun.local.scheduler import Scheduler
from lambdarun.local.shapes import ApiError
from lambdarun.private_files import private_dir
from lambdarun.types import LambdaServiceExtension, RawInvokeResult

log = structlog.get_logger(__name__)


class ServiceHost:
    """The :class:`lambdarun.types.LambdaServiceHost` of one local Lambda service."""

    def __init__(self, registry: Registry, scheduler: Scheduler, records: RecordBook,
                 state_dir: Path, *, persistent: bool) -> None:
        self.region = registry.region
        self.account = ACCOUNT_ID
        self.state_dir = private_dir(state_dir / "extensions")
        self.persistent = persistent
        self._registry = registry
        self._scheduler = scheduler
        self._records = records

    def function_config(self, name: str, qualifier: str | None = None) -> dict[str, Any] | None:
        try:
            return self._registry.lookup(name, qualifier).configuration()
        except ApiError:
            return None

    def invoke_raw(self, name: str, qualifier: str | None, payload: bytes) -> RawInvokeResult:
        try:
            fn = self._registry.lookup(name, qualifier)
        except ApiError as e:
            raise LookupError(e.message) from e
        inv = Invocation(payload, None, fn.timeout)
        rec = inv.record = self._records.new(inv.request_id, fn.name, "RequestResponse", "running")
        rec.attempts = 1
        try:
            self._scheduler.run(fn, inv, wait=True)
        except ApiError as e:  # deleted, or the service is stopping
            rec.status = "failed"
            rec.error_type, rec.error_message = e.code, e.message
            raise LookupError(e.message) from e
        return RawInvokeResult(inv.result, inv.function_error)


def load_extensions(host: ServiceHost) -> list[LambdaServiceExtension]:
    """Ask the installed plugins for their service extensions (a broken one is skipped
    and logged: the service still serves the Lambda API)."""
    from lambdarun.plugins import make_plugin_manager

    out: list[LambdaServiceExtension] = []
    try:
        pm = make_plugin_manager()
        for result in pm.hook.lambdarun_lambda_service_extensions(host=host):
            out.extend(result or ())
    except Exception:  # noqa: BLE001 - a plugin's failure must not take the service down
        log.exception("local lambda service extensions failed to load; serving without them")
    return out


def extension_reply(extensions: list[LambdaServiceExtension], method: str, path: str,
                    query: Mapping[str, str], headers: Any, body: bytes) -> Any:
    for ext in extensions:
        reply = ext.route(method, path, query, headers, body)
        if reply is not None:
            return reply
    return None
