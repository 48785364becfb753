"""A client of the local Lambda service's read-only JSON API (``/_lambdarun/...``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import attrs

from lambdarun.errors import LambdarunError

__all__ = ["LambdaApi", "LambdaApiError", "InvocationPage"]


class LambdaApiError(LambdarunError):
    """The local Lambda service did not answer its read API."""


@attrs.frozen
class InvocationPage:
    """One page of invocations, newest first; ``next_before`` pages further back."""

    invocations: list[dict[str, Any]]
    next_before: Any | None


class LambdaApi:
    """``GET /_lambdarun/functions``, ``/_lambdarun/invocations[/{request_id}]``.

    :param base_url: the Lambda endpoint of the local stack (``http://127.0.0.1:PORT``).
    :param credentials: the stack's :class:`~lambdarun.local.auth.StackCredentials` (the
        service answers SigV4-signed requests only).
    """

    def __init__(self, base_url: str, *, timeout: float = 5.0, credentials: Any = None,
                 region: str = "us-east-1") -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.credentials = credentials
        self.region = region

    def _get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        url = f"{self.base_url}/_lambdarun/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request: Any = url
        if self.credentials is not None:
            from lambdarun.local.auth import signed_request

            request = signed_request(url, self.credentials, region=self.region)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                body = exc.read()[:300].decode("utf-8", "replace")
                kind = exc.headers.get("X-Amzn-ErrorType", "") if exc.headers else ""
                if "UnknownOperation" in kind or "UnknownOperation" in body:
                    raise LambdaApiError(
                        f"the local Lambda service at {self.base_url} has no read API "
                        f"(/_lambdarun/{path}); upgrade lambdarun in the process running "
                        "`lambdarun local up`"
                    ) from exc
                return None
            raise LambdaApiError(f"the local Lambda service answered {exc.code} for {url}") from exc
        except (OSError, ValueError) as exc:
            raise LambdaApiError(
                f"the local Lambda service at {self.base_url} did not answer ({exc}); is the "
                "local stack still up? (`lambdarun local status`)"
            ) from exc

    def functions(self) -> list[dict[str, Any]]:
        doc = self._get("functions")
        if isinstance(doc, dict):
            doc = doc.get("functions", doc.get("Functions", []))
        return list(doc or [])

    def invocations(
        self,
        *,
        function: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: Any | None = None,
    ) -> InvocationPage:
        doc = self._get(
            "invocations", {"function": function, "status": status, "limit": limit, "before": before}
        )
        if isinstance(doc, list):
            return InvocationPage(doc, None)
        doc = doc or {}
        return InvocationPage(list(doc.get("invocations", [])), doc.get("next_before"))

    def invocation(self, request_id: str) -> dict[str, Any] | None:
        """One invocation with its ``log``, ``error`` (with ``stackTrace``) and ``response_preview``."""
        return self._get(f"invocations/{urllib.parse.quote(request_id, safe='')}")
