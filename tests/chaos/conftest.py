"""Chaos fixtures: the real local stack, covalent sessions on it, and a session whose Lambda
API traffic goes through a :class:`lambdarun.testing.FaultProxy` (to drop connections while an
Invoke is in flight).

Other modules here (``test_local_*.py``) kill parts of the local service; they use the same
``chaos_stack``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.local import plugin as local_plugin
from lambdarun.plugins import DEFAULT_PLUGINS
from lambdarun.local.testing import local_stack_fixture
from lambdarun.testing import FaultProxy

#: the real local target, private to the chaos suite
chaos_stack = local_stack_fixture(scope="session", async_retry_delay=0.1)

#: the function the chaos tests run on (long timeout: per-task timeouts are the caller's)
FUNCTION = "lambdarun-chaos"
#: same handler, 2 s timeout: a duplicate delivered there cannot wait long for the first
SHORT_FUNCTION = "lambdarun-chaos-short"


def plugins() -> list[Any]:
    out: list[Any] = [lambdarun_covalent.plugin]
    if not any(name.startswith("lambdarun.local") for name in DEFAULT_PLUGINS):
        out.append(local_plugin)
    return out


@pytest.fixture
def make_session(lambdarun_session: Callable[..., Any], chaos_stack: Any) -> Callable[..., Any]:
    """``make_session(core=None, **covalent)``: a fresh Session on the chaos stack."""

    def factory(*, core: dict[str, Any] | None = None, **covalent: Any) -> Any:
        overrides: dict[str, Any] = {
            "target": "local",
            "local": {"state_dir": str(chaos_stack.state_dir)},
            "progress": False,
            **(core or {}),
            "covalent": {"function_name": FUNCTION, **covalent},
        }
        return lambdarun_session(*plugins(), overrides=overrides)

    return factory


@pytest.fixture
def session(make_session: Callable[..., Any]) -> Any:
    return make_session()


@pytest.fixture
def proxied(make_session: Callable[..., Any], lambdarun_session: Callable[..., Any], chaos_stack: Any,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, FaultProxy]]:
    """``(session, proxy)``: a covalent session whose boto3 Lambda client reaches the local
    Lambda API through a FaultProxy (the ``aws`` target pointed at the proxy), sharing the
    local stack's storage and claim store."""
    local = make_session()
    assert lambdarun.run(os.getpid, session=local) > 0  # the function exists, warm
    claims = local.target.claims_url()
    storage = local.target.default_storage_url()
    port = urlsplit(chaos_stack.endpoints.lambda_).port
    for key, value in chaos_stack.environment().items():
        if not key.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with FaultProxy(("127.0.0.1", port)) as proxy:
        session = lambdarun_session(*plugins(), overrides={
            "target": "aws",
            "region": chaos_stack.region,
            "aws": {"lambda_endpoint_url": proxy.url, "s3_endpoint_url": chaos_stack.endpoints.moto,
                    "max_attempts": 3},
            "storage_url": storage,
            "claims_url": claims,
            # the aws target signs with the key the local stack's functions verify with
            "signing_key": local.target.signing_key().decode(),
            "progress": False,
            "covalent": {"function_name": FUNCTION},
        })
        # the local Lambda API answers only requests addressed to its own host:port (a
        # rebinding guard), so the proxied client names the service, as a transparent
        # proxy would, and signs that
        service_host = urlsplit(chaos_stack.endpoints.lambda_).netloc

        def address_the_service(request: Any, **_: Any) -> None:
            request.headers["Host"] = service_host

        session.target.client("lambda").meta.events.register("before-sign.lambda", address_the_service)
        yield session, proxy


@pytest.fixture
def names() -> Any:
    """The chaos functions' names: ``names.FUNCTION``, ``names.SHORT_FUNCTION``."""
    import types

    return types.SimpleNamespace(FUNCTION=FUNCTION, SHORT_FUNCTION=SHORT_FUNCTION)


@pytest.fixture
def environment_pids(chaos_stack: Any) -> Callable[[str], list[int]]:
    """``environment_pids(function)``: pids of the function's busy environments, from the
    local service's extension API."""
    return lambda function: busy_pids(chaos_stack, function)


def functions_view(stack: Any) -> list[dict[str, Any]]:
    """The local service's ``GET /_lambdarun/functions`` (environments with their pids)."""
    request = stack.signed_request(stack.endpoints.lambda_ + "/_lambdarun/functions")
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())["functions"]


def busy_pids(stack: Any, function: str) -> list[int]:
    return [
        env["pid"]
        for fn in functions_view(stack) if fn["name"] == function
        for env in fn["environments"] if env["state"] == "busy" and env["pid"]
    ]


def invocation_records(stack: Any, function: str) -> list[dict[str, Any]]:
    """The local service's ``GET /_lambdarun/invocations`` of ``function``, newest first."""
    url = stack.endpoints.lambda_ + "/_lambdarun/invocations?" + urlencode({"function": function, "limit": 1000})
    with urllib.request.urlopen(stack.signed_request(url), timeout=10) as r:
        return json.loads(r.read())["invocations"]


class InvocationLog:
    """The invocation records of the chaos stack (its extension API), from a mark on."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    def mark(self, function: str) -> int:
        """The newest record's ``seq`` now (0 without any): what :meth:`settled` counts from."""
        records = invocation_records(self.stack, function)
        return records[0]["seq"] if records else 0

    def settled(self, function: str, since: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """``function``'s records after ``since``, once none of them is running or queued
        (every delivery has finished and been recorded); newest first."""
        deadline = time.monotonic() + timeout
        while True:
            records = [r for r in invocation_records(self.stack, function) if r["seq"] > since]
            if records and not any(r["status"] in ("running", "queued") for r in records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"{function}'s invocations did not all finish within {timeout} s: {records}")
            time.sleep(0.02)


@pytest.fixture
def invocation_log(chaos_stack: Any) -> InvocationLog:
    """:class:`InvocationLog` of the chaos stack: ``mark(function)`` then ``settled(function, mark)``."""
    return InvocationLog(chaos_stack)
