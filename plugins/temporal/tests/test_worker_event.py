"""The worker event cannot choose the Temporal server: address, namespace, TLS and the API key
come from the worker function's own ``[temporal]`` configuration only.

Threat: whoever may invoke the worker function sends an event whose ``address`` points at a
server they control, to receive the worker's connection (and its API key, sent as a bearer
token). Each attack below asserts that the event is refused with ``WorkerEventError`` and
that no connection reached the attacker's listener (a plain socket recording accepts).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest

import lambdarun_temporal.plugin
from lambdarun.local.testing import local_stack_fixture, session_plugins
from lambdarun_temporal.errors import LambdaWorkerConfigError, WorkerEventError
from lambdarun_temporal.testing import FakeLambdaContext
from lambdarun_temporal.worker import WORKER_EVENT_KEY, WORKER_EVENT_VERSION, handle_worker_event

cloudpickle.register_pickle_by_value(sys.modules[__name__])

local_stack = local_stack_fixture(scope="module")

FUNCTION = "lambdarun-temporal-event-tests"


def plugins() -> list[Any]:
    return session_plugins(lambdarun_temporal.plugin)


def event(**extra: Any) -> dict[str, Any]:
    return {
        WORKER_EVENT_KEY: WORKER_EVENT_VERSION,
        "task_queue": f"tq-{uuid.uuid4().hex[:8]}",
        "deployment_name": "lambdarun",
        "build_id": "lambdarun-1",
        "idle_timeout": 1.0,
        "max_concurrent_calls": 4,
        **extra,
    }


@pytest.fixture
def worker_session(lambdarun_session: Callable[..., Any]) -> Callable[..., Any]:
    """A session as inside the worker function: [temporal] from its configuration."""

    def factory(**temporal: Any) -> Any:
        return lambdarun_session(*plugins(), overrides={"progress": False, "temporal": temporal})

    return factory


# -- in-process: refused before anything connects --------------------------------------------


@pytest.mark.parametrize(
    "forged",
    [
        {"address": "ATTACKER"},
        {"namespace": "attacker-namespace"},
        {"tls": False},  # a downgrade: the API key would travel in clear text
        {"api_key": "stolen-or-planted"},
        {"address": "ATTACKER", "api_key": ""},
        {"address": "ATTACKER", "namespace": "default", "tls": False},
    ],
    ids=["address", "namespace", "tls-off", "api_key", "address+empty-key", "address+same-rest"],
)
def test_event_choosing_the_server_is_refused(worker_session, listener, attacker, forged):
    """The configured server is a recording listener too, so *any* connection attempt (to
    the event's address or the configured one) would show up."""
    session = worker_session(address=listener.address, api_key="secret-key")
    if forged.get("address") == "ATTACKER":
        forged = {**forged, "address": attacker.address}
    with pytest.raises(WorkerEventError) as info:
        handle_worker_event(event(**forged), FakeLambdaContext(timeout=10), session)
    assert "secret-key" not in str(info.value) and "stolen" not in str(info.value)
    assert attacker.address not in str(info.value)
    assert (listener.connections, attacker.connections) == (0, 0)


def test_event_address_pointing_at_a_listener_never_reaches_it(worker_session, temporal_server, attacker):
    session = worker_session(address=temporal_server.address)
    with pytest.raises(WorkerEventError, match="address"):
        handle_worker_event(event(address=attacker.address), FakeLambdaContext(timeout=10), session)
    assert attacker.connections == 0


@pytest.mark.parametrize(
    "malformed",
    [
        {"task_queue": None},
        {"task_queue": ""},
        {"task_queue": "q" * 5000},
        {"deployment_name": 7},
        {"build_id": ["v1"]},
        {"idle_timeout": "1; touch /tmp/x"},
        {"idle_timeout": -1},
        {"idle_timeout": float("inf")},
        {"max_concurrent_calls": 10**9},
        {"max_concurrent_calls": 2.5},
        {"max_concurrent_calls": True},
    ],
    ids=lambda m: f"{next(iter(m))}={str(next(iter(m.values())))[:12]}",
)
def test_malformed_event_is_refused_before_connecting(worker_session, listener, malformed):
    session = worker_session(address=listener.address)
    with pytest.raises(WorkerEventError):
        handle_worker_event(event(**malformed), FakeLambdaContext(timeout=10), session)
    assert listener.connections == 0


def test_worker_without_a_configured_server_is_a_config_error(worker_session, listener):
    session = worker_session()
    with pytest.raises(LambdaWorkerConfigError, match="LAMBDARUN_TEMPORAL__ADDRESS"):
        handle_worker_event(event(), FakeLambdaContext(timeout=10), session)
    assert listener.connections == 0


# -- through the local Lambda service: the real worker function ------------------------------


@pytest.fixture
def backend(lambdarun_session: Callable[..., Any], local_stack: Any, temporal_server: Any) -> Any:
    overrides: dict[str, Any] = {
        "target": "local",
        "local": {"state_dir": str(local_stack.state_dir)},
        "progress": False,
        "temporal": {
            "address": temporal_server.address,
            "function_name": FUNCTION,
            "task_queue": f"lambdarun-{uuid.uuid4().hex[:8]}",
            "function_timeout": 20,
        },
    }
    session = lambdarun_session(*plugins(), overrides=overrides)
    return session.backend("temporal")


def invoke(backend: Any, payload: dict[str, Any]) -> tuple[str | None, Any]:
    response = backend.session.invoker.invoke(backend.function_name, json.dumps(payload).encode())
    return response.function_error, json.loads(response.payload)


@pytest.mark.timeout(90)
def test_worker_function_connects_only_where_its_configuration_says(backend, temporal_server, attacker):
    # the event the backend sends carries no server at all ...
    legit = backend.worker_event()
    assert not {"address", "namespace", "tls", "api_key"} & set(legit)
    error, summary = invoke(backend, legit)
    assert error is None, summary
    assert summary["stop_reason"] == "idle"  # it connected (to the configured dev server)
    # ... and a forged one pointing at the attacker is refused inside the function
    error, payload = invoke(backend, {**legit, "address": attacker.address})
    assert error is not None
    assert payload["errorType"] == "WorkerEventError", payload
    assert attacker.connections == 0
    # the same address as configured (what older controllers sent) is accepted
    error, summary = invoke(backend, {**legit, "address": temporal_server.address})
    assert error is None and summary["stop_reason"] == "idle", summary


@pytest.mark.parametrize(("key", "value"), [("max_concurrent_calls", 5000), ("idle_timeout", 901.0)])
def test_config_refuses_what_the_worker_would_refuse(lambdarun_session, key, value):
    from lambdarun.errors import ConfigError

    with pytest.raises(ConfigError, match=f"temporal.{key}.*at most"):
        lambdarun_session(*plugins(), overrides={"temporal": {key: value}}).settings.section("temporal")
