"""boto3 clients of the stack's other services (moto), made once per service and shared."""

from __future__ import annotations

import threading
from typing import Any

from lambdarun.local.options import ServiceOptions


class AwsClients:
    """``clients.get("s3")``: a client for ``options.service_endpoints``, signed with the
    stack's credentials; ``LookupError`` when the service has no endpoint for it."""

    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    def get(self, service: str) -> Any:
        endpoint = self.options.service_endpoints.get(service.upper()) or self.options.service_endpoints.get("")
        if not endpoint:
            raise LookupError(f"this local Lambda service has no endpoint for {service}")
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                import boto3

                client = boto3.session.Session(
                    **self.options.credentials.boto3_kwargs(), region_name=self.options.region,
                ).client(service, endpoint_url=endpoint)
                self._clients[service] = client
            return client
