"""The durable-execution API this plugin adds to the local Lambda service (hook
``lambdarun_lambda_service_extensions``): AWS's ``/2025-12-01/`` operations, durable
``Invoke`` and the service-side scheduler, on the plugin's engine.
See :mod:`.api` (routes) and :mod:`.runner` (scheduler)."""

from __future__ import annotations

from typing import Any

from lambdarun.hookspecs import hookimpl


@hookimpl
def lambdarun_lambda_service_extensions(host: Any) -> list[Any]:
    from lambdarun_durable.local_api.api import DurableApi

    return [DurableApi(host)]
