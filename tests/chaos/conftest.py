"""Chaos fixtures: the real local stack, covalent sessions on it, and a session whose Lambda
API traffic goes through a :class:`lambdarun.testing.FaultProxy` (to drop connections while an
Invoke is in flight).

Other modules here (``test_local_*.py``) kill parts of the local service; they use the same
``chaos_stack``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.local.testing import (
    InvocationLog,
    busy_pids,
    local_stack_fixture,
    session_fixtures,
    session_plugins,
)
from lambdarun.testing import FaultProxy

#: the real local target, private to the chaos suite
chaos_stack = local_stack_fixture(scope="session", async_retry_delay=0.1)

#: the function the chaos tests run on (long timeout: per-task timeouts are the caller's)
FUNCTION = "lambdarun-chaos"
#: same handler, 2 s timeout: a duplicate delivered there cannot wait long for the first
SHORT_FUNCTION = "lambdarun-chaos-short"


def plugins() -> list[Any]:
    return session_plugins(lambdarun_covalent.plugin)


#: ``make_session(core=None, **covalent)``: a fresh Session on the chaos stack
make_session, session = session_fixtures("chaos_stack", [lambdarun_covalent.plugin], "covalent", function_name=FUNCTION)


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

        def address_the_service_invoke(headers: dict[str, str]) -> None:
            headers["Host"] = service_host

        session.target.client("lambda").meta.events.register("before-sign.lambda", address_the_service)
        session.invoker.before_sign(address_the_service_invoke)  # the Invoke hot path (lambdarun.lambda_http)
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


@pytest.fixture
def invocation_log(chaos_stack: Any) -> InvocationLog:
    """:class:`InvocationLog` of the chaos stack: ``mark(function)`` then ``settled(function, mark)``."""
    return InvocationLog(chaos_stack)
