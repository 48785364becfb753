"""The local Lambda service: the Lambda REST API on 127.0.0.1, running real handlers.

A plain ``boto3.client("lambda", endpoint_url=service.url)`` works against it. Functions run
in execution environments: one worker process per environment, one invocation at a time,
each with its own Lambda Runtime API endpoint (a port of this service) and the real
``awslambdaric`` client inside. See :class:`LambdaService`.

Code from a local directory (no upload, used in place)::

    lam.create_function(..., Code={"S3Bucket": "__local__", "S3Key": "/abs/dir"})

``"hot-reload"`` is accepted as the bucket name too (LocalStack's convention). Any other
``S3Bucket`` is fetched from the local S3 (moto) when the service knows its endpoint.

This module only wires the parts together; each is owned by its own module:
:mod:`.api` (REST front, routing), :mod:`.control` (functions, tags, concurrency,
event-invoke config), :mod:`.invoke` (Invoke), :mod:`.scheduler` and :mod:`.environment`
(execution environments), :mod:`.async_queue` (Events), :mod:`.records` (invocation
records, REPORT lines), :mod:`.function_code` (code, zips), :mod:`.runtime_api` (the
Runtime API), :mod:`.extension` (``/_lambdarun``), :mod:`.options` (settings, limits).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from lambdarun.local import auth
from lambdarun.local._http import LoopbackServer
from lambdarun.local.api import ApiHandler, LambdaApi
from lambdarun.local.async_queue import AsyncQueue
from lambdarun.local.aws_clients import AwsClients
from lambdarun.local.control import ControlPlane
from lambdarun.local.environment import Environment
from lambdarun.local.extension import ExtensionApi
from lambdarun.local.invoke import Invoker
from lambdarun.local.log_shipping import LogShipper
from lambdarun.local.model import Function, Registry
from lambdarun.local.options import (
    ACCOUNT_ID,
    ASYNC_REQUEST_LIMIT,
    CODE_REQUEST_LIMIT,
    LOCAL_CODE_BUCKETS,
    LOCAL_ENDPOINTS_VAR,
    SYNC_REQUEST_LIMIT,
    SYNC_RESPONSE_LIMIT,
    UNZIPPED_CODE_LIMIT,
    ZIP_UPLOAD_LIMIT,
    ServiceOptions,
)
from lambdarun.local.persist import ServiceState
from lambdarun.local.records import InvocationRecord, RecordBook
from lambdarun.local.scheduler import Scheduler
from lambdarun.local.service_extensions import ServiceHost, load_extensions
from lambdarun.local.shapes import ApiError, Reply
from lambdarun.private_files import private_dir

__all__ = [
    "ServiceOptions",
    "LambdaService",
    "LOCAL_CODE_BUCKETS",
    "ACCOUNT_ID",
    "LOCAL_ENDPOINTS_VAR",
    "SYNC_REQUEST_LIMIT",
    "ASYNC_REQUEST_LIMIT",
    "SYNC_RESPONSE_LIMIT",
    "CODE_REQUEST_LIMIT",
    "UNZIPPED_CODE_LIMIT",
    "ZIP_UPLOAD_LIMIT",
    "ApiError",
    "InvocationRecord",
]

log = structlog.get_logger(__name__)


class LambdaService:
    """The local Lambda service (the Lambda REST API plus execution environments).

    ``LambdaService(options).start()``; :attr:`url` is the endpoint for
    ``boto3.client("lambda", endpoint_url=...)``. :meth:`stop` kills every environment.
    """

    def __init__(self, options: ServiceOptions, state: ServiceState | None = None) -> None:
        self.options = options
        #: where functions and queued Events are kept across restarts (None: memory only)
        self._state = state
        self.registry = Registry(options.region)
        self.records_book = RecordBook(options.record_limit)
        self.clients = AwsClients(options)
        self.scheduler = Scheduler(options, self.registry)
        self.async_queue = AsyncQueue(options, self.registry, self.scheduler, self.records_book,
                                      self.clients, state)
        self.control = ControlPlane(options, self.registry, self.scheduler, self.async_queue,
                                    self.clients, state)
        self.invoker = Invoker(self.registry, self.scheduler, self.async_queue, self.records_book)
        self.extension = ExtensionApi(options, self.registry, self.scheduler, self.async_queue,
                                      self.records_book)
        #: checks every API request's signature against ``options.credentials``
        self.verifier = auth.SigV4Verifier(options.credentials)
        self.api = LambdaApi(self.verifier, self.control, self.invoker, self.extension)
        #: the host plugins' extensions get (lambdarun_lambda_service_extensions)
        self.host = ServiceHost(self.registry, self.scheduler, self.records_book, options.state_dir,
                                persistent=state is not None)
        self.extensions: list[Any] = []
        self._server: LoopbackServer | None = None
        private_dir(options.state_dir)
        private_dir(options.state_dir / "functions")
        private_dir(options.state_dir / "logs")
        options.credentials.save(options.state_dir / auth.CREDENTIALS_FILE)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LambdaService:
        if self._state is not None:
            self.control.restore()
        self.extensions = load_extensions(self.host)
        self.api.extensions = self.invoker.extensions = self.extensions
        self._server = LoopbackServer(ApiHandler, self.api, port=self.options.port, name="lambda-api")
        self.api.bind(self._server.url, self._server.port)
        self.scheduler.api_url = self._server.url
        if self._state is not None:
            self.async_queue.restore()
        self._server.start()
        self.scheduler.start()
        if self.options.cloudwatch_logs and (
            self.options.service_endpoints.get("LOGS") or self.options.service_endpoints.get("")
        ):
            self.scheduler.shipper = LogShipper(lambda: self.clients.get("logs"))
            self.scheduler.shipper.start()
        log.debug("local lambda service started", url=self.url)
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LambdaService.start() first")
        return self._server.url

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """Host headers the API answers (requests without one are answered too)."""
        return self.api.allowed_hosts

    def stop(self) -> None:
        """Stop serving and kill every environment; waits until their processes are gone."""
        if self.registry.stopping.is_set():
            return
        self.registry.stopping.set()
        if self._server is not None:
            self._server.close()
        for ext in self.extensions:
            try:
                ext.close()
            except Exception:  # noqa: BLE001 - stopping goes on
                log.exception("local lambda service extension failed to close", extension=repr(ext))
        dropped = self.async_queue.stop()
        if self.scheduler.shipper is not None:
            self.scheduler.shipper.stop()
        if dropped and self._state is None:
            log.warning("local lambda stopped with queued async events dropped", count=dropped)
        elif dropped:
            log.info("local lambda stopped; queued async events kept for the next start", count=dropped)
        self.scheduler.stop()
        if self._state is not None:
            self._state.close()

    # -- what the stack, the dashboard and tests read ----------------------------------

    def runtime_dir(self) -> Path:
        """This service's directory of the packages Lambda's runtime provides."""
        return self.scheduler.runtime_dir()

    def environment_pids(self) -> list[int]:
        return self.scheduler.environment_pids()

    def function_environment(self, fn: Function, env: Environment) -> dict[str, str]:
        return self.scheduler.function_environment(fn, env)

    def records(self) -> list[InvocationRecord]:
        """The kept invocation records, oldest first (a snapshot)."""
        return self.records_book.records()

    def route(self, method: str, path: str, query: dict[str, str], headers: Any,
              body: bytes, *, raw_query: str = "") -> Reply:
        return self.api.route(method, path, query, headers, body, raw_query=raw_query)

    def stop_invocations(self, name: str, marker: str) -> dict[str, list[str]]:
        return self.extension.stop_invocations(name, marker)

    def functions_view(self) -> list[dict[str, Any]]:
        return self.extension.functions_view()

    def invocations_view(self, query: Mapping[str, str]) -> dict[str, Any]:
        return self.records_book.invocations_view(query)

    def invocation_detail(self, request_id: str) -> dict[str, Any]:
        return self.records_book.invocation_detail(request_id)
