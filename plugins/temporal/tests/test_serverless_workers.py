"""Temporal Serverless Workers end to end on the local target: the real Temporal dev server
(worker controller + AWS Lambda compute provider) assumes a role with an External ID
through the local STS and Event-invokes a ``lambda_worker`` function on the local Lambda;
a plain temporalio Client starts the workflows. Nothing of lambdarun runs in this process
but the fixtures that start the stack and the server."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local import LocalStack
from lambdarun.local.testing import local_stack_fixture, session_plugins
from lambdarun_temporal.devserver import DevServer, serverless_workers_environment
from lambdarun_temporal.serverless_testing import ServerlessSetup, run_workflows

local_stack = local_stack_fixture(scope="module", max_concurrency=8)


@pytest.fixture(scope="module")
def sw_server(local_stack: LocalStack) -> Iterator[DevServer]:
    """A dev server whose worker controller invokes the local Lambda through the local STS."""
    endpoints = {"lambda": local_stack.endpoints.lambda_, "sts": local_stack.endpoints.moto}
    env = serverless_workers_environment(endpoints, local_stack.region, local_stack.credentials.environment())
    with DevServer(worker_controller=True, environment=env) as server:
        yield server


@pytest.fixture
def setup(local_stack: LocalStack, sw_server: DevServer, tmp_path: Path) -> ServerlessSetup:
    return ServerlessSetup(local_stack, sw_server, tmp_path)


def _run(setup: ServerlessSetup, names: list[str], timeout: float) -> list[str]:
    return asyncio.run(run_workflows(setup.server.address, setup.task_queue, names, timeout))[1]


def test_version_refused_when_the_role_does_not_enforce_the_external_id(setup: ServerlessSetup) -> None:
    """The server checks that AssumeRole without the External ID is refused; with a role
    that trusts the caller without an External ID condition, create-version is refused."""
    iam = setup.stack.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]}
    loose = iam.create_role(RoleName=f"loose-{setup.suffix}", AssumeRolePolicyDocument=json.dumps(trust))
    setup.role_arn = loose["Role"]["Arn"]
    arn = setup.function("v1")
    done = setup.version("v1", arn, check=False)
    assert done.returncode != 0
    assert "externalid" in (done.stderr + done.stdout).lower().replace(" ", "").replace("_", "")
    assert setup.invoked_builds() == []


def test_version_refused_with_a_wrong_external_id(setup: ServerlessSetup) -> None:
    arn = setup.function("v1")
    done = setup.version("v1", arn, external_id="ext-not-the-one", check=False)
    assert done.returncode != 0
    assert setup.invoked_builds() == []


@pytest.mark.timeout(480)
def test_server_invokes_the_function_and_drains_50_workflows_then_a_new_version(setup: ServerlessSetup) -> None:
    arn_v1 = setup.function("v1")
    setup.version("v1", arn_v1)
    setup.set_current("v1")
    names = [f"n{i}" for i in range(50)]
    results = _run(setup, names, timeout=240)
    assert results == [f"{n}@v1" for n in names]
    assert setup.invoked_builds() and set(setup.invoked_builds()) == {"v1"}  # the server invoked it

    # a second version, set current: new workflows run on the new function, invoked by the server
    before = len(setup.invoked_builds())
    arn_v2 = setup.function("v2")
    setup.version("v2", arn_v2)
    setup.set_current("v2")
    setup.wait_routed("v2")
    results = _run(setup, ["late"], timeout=120)
    assert results == ["late@v2"]
    assert "v2" in setup.invoked_builds()[before:], setup.invocations.read_text()



# -- backend="temporal" on the local target: the server lambdarun starts invokes the workers ----

def _triple(x: int) -> int:
    return x * 3


@pytest.fixture
def on_demand_server() -> Iterator[None]:
    from lambdarun_temporal.devserver import stop_shared_dev_server

    stop_shared_dev_server()
    yield
    stop_shared_dev_server()


@pytest.mark.timeout(180)
def test_backend_on_the_local_target_uses_the_servers_controller(lambdarun_session: Any, local_stack: LocalStack,
                                                                 on_demand_server: None) -> None:
    import cloudpickle

    import lambdarun
    import lambdarun_temporal.plugin

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plugins = session_plugins(lambdarun_temporal.plugin)
    suffix = uuid.uuid4().hex[:8]
    session = lambdarun_session(*plugins, overrides={
        "target": "local", "local": {"state_dir": str(local_stack.state_dir)}, "progress": False,
        "temporal": {"function_name": f"sw-backend-{suffix}", "task_queue": f"sw-backend-{suffix}",
                     "deployment_name": f"sw-backend-{suffix}", "function_timeout": 30}})
    backend = session.backend("temporal")
    assert list(lambdarun.map(_triple, range(20), backend="temporal", session=session)) == [3 * i for i in range(20)]
    assert backend.server_controlled is True
    assert backend.invocations == 0  # lambdarun invoked nothing: the server did
    iam = local_stack.client("iam")
    role = iam.get_role(RoleName=f"sw-backend-{suffix}-temporal-invoke")["Role"]
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Condition"]["StringEquals"]["sts:ExternalId"]
    # the role is what the server assumed: without the External ID the local STS refuses it
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="AccessDenied"):
        local_stack.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="probe")


# -- what the function accepts as a server invocation -----------------------------------------

@pytest.mark.parametrize("event", [{"task_queue": "evil"}, {"address": "attacker.example:7233"},
                                   {"lambdarun_temporal": 2}, [], "x", None])
def test_only_an_empty_event_is_a_server_invocation(lambdarun_session: Any, event: Any) -> None:
    """A worker function in server mode serves its own [temporal] configuration and only for
    the server's empty event: an event that tries to choose queue or server is not handled
    (nothing connects: the configured address is a closed port that would fail loudly)."""
    import lambdarun_temporal.plugin
    from lambdarun_temporal.plugin import lambdarun_handle_event

    session = lambdarun_session(lambdarun_temporal.plugin, overrides={
        "temporal": {"worker_controller": "server", "address": "127.0.0.1:1"}})
    assert lambdarun_handle_event(event=event, context=None, session=session) is None


def test_an_empty_event_is_not_a_server_invocation_in_client_mode(lambdarun_session: Any) -> None:
    import lambdarun_temporal.plugin
    from lambdarun_temporal.plugin import lambdarun_handle_event

    for mode in ("client", "auto"):
        session = lambdarun_session(lambdarun_temporal.plugin, overrides={
            "temporal": {"worker_controller": mode, "address": "127.0.0.1:1"}})
        assert lambdarun_handle_event(event={}, context=None, session=session) is None


def test_server_invocation_serves_the_configured_queue(lambdarun_session: Any, monkeypatch: Any) -> None:
    """An empty event becomes a worker event built from the function's own configuration."""
    import lambdarun_temporal.plugin
    import lambdarun_temporal.worker as worker
    from lambdarun_temporal.plugin import lambdarun_handle_event

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(worker, "handle_worker_event", lambda event, context, session: seen.append(event) or {})
    session = lambdarun_session(lambdarun_temporal.plugin, overrides={"temporal": {
        "worker_controller": "server", "address": "127.0.0.1:1", "task_queue": "tq-configured",
        "deployment_name": "dep", "build_id": "b7"}})
    assert lambdarun_handle_event(event={}, context=None, session=session) == {}
    assert [(e["task_queue"], e["deployment_name"], e["build_id"]) for e in seen] == [("tq-configured", "dep", "b7")]


def _session(lambdarun_session: Any, local_stack: LocalStack, **temporal: Any) -> Any:
    import cloudpickle

    import lambdarun_temporal.plugin

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plugins = session_plugins(lambdarun_temporal.plugin)
    return lambdarun_session(*plugins, overrides={
        "target": "local", "local": {"state_dir": str(local_stack.state_dir)}, "progress": False,
        "temporal": temporal})


@pytest.mark.timeout(180)
def test_backend_on_a_configured_server_with_a_given_role(lambdarun_session: Any, local_stack: LocalStack,
                                                          sw_server: DevServer, setup: ServerlessSetup) -> None:
    """[temporal] address + worker_controller = "server" + invoke_role_arn/external_id (what
    `lambdarun deploy` creates on AWS): the backend registers the version with that role and
    the server invokes the function."""
    import lambdarun

    suffix = uuid.uuid4().hex[:8]
    session = _session(lambdarun_session, local_stack, address=sw_server.address, worker_controller="server",
                       invoke_role_arn=setup.role_arn, external_id=setup.external_id,
                       function_name=f"sw-given-{suffix}", task_queue=f"sw-given-{suffix}",
                       deployment_name=f"sw-given-{suffix}", function_timeout=30)
    backend = session.backend("temporal")
    assert lambdarun.run(_triple, 14, backend="temporal", session=session) == 42
    assert backend.server_controlled is True and backend.invocations == 0


def test_auto_on_a_configured_server_without_a_role_is_lambdaruns_controller(
        lambdarun_session: Any, local_stack: LocalStack, sw_server: DevServer) -> None:
    import lambdarun

    suffix = uuid.uuid4().hex[:8]
    session = _session(lambdarun_session, local_stack, address=sw_server.address,
                       function_name=f"sw-auto-{suffix}", task_queue=f"sw-auto-{suffix}",
                       deployment_name=f"sw-auto-{suffix}", function_timeout=20)
    backend = session.backend("temporal")
    assert lambdarun.run(_triple, 2, backend="temporal", session=session) == 6
    assert backend.server_controlled is False and backend.invocations >= 1


def test_server_mode_on_a_configured_server_needs_the_role(lambdarun_session: Any, local_stack: LocalStack,
                                                           sw_server: DevServer) -> None:
    import lambdarun
    from lambdarun.errors import ConfigError

    suffix = uuid.uuid4().hex[:8]
    session = _session(lambdarun_session, local_stack, address=sw_server.address, worker_controller="server",
                       function_name=f"sw-norole-{suffix}", task_queue=f"sw-norole-{suffix}",
                       deployment_name=f"sw-norole-{suffix}")
    with pytest.raises(ConfigError, match="invoke_role_arn"):
        lambdarun.run(_triple, 1, backend="temporal", session=session)


def test_the_invoke_role_keeps_its_external_id(local_stack: LocalStack) -> None:
    from lambdarun_temporal.serverless import ensure_invoke_role

    iam = local_stack.client("iam")
    name = f"keep-{uuid.uuid4().hex[:8]}"
    arn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    role, first = ensure_invoke_role(iam, role_name=name, principal="arn:aws:iam::123456789012:root", function_arn=arn)
    again, second = ensure_invoke_role(iam, role_name=name, principal="arn:aws:iam::123456789012:root", function_arn=arn)
    assert (again, second) == (role, first) and len(first) >= 20
    _, third = ensure_invoke_role(iam, role_name=name, principal="arn:aws:iam::123456789012:root",
                                  function_arn=arn, external_id="chosen-id")
    assert third == "chosen-id"
    sts = local_stack.client("sts", retries={"total_max_attempts": 1})
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="AccessDenied"):
        sts.assume_role(RoleArn=role, RoleSessionName="probe", ExternalId=first)
    assert sts.assume_role(RoleArn=role, RoleSessionName="probe", ExternalId="chosen-id")["Credentials"]
    policy = iam.get_role_policy(RoleName=name, PolicyName="lambdarun-temporal-invoke")["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    assert policy["Statement"][0]["Action"] == ["lambda:InvokeFunction", "lambda:GetFunction"]
    assert policy["Statement"][0]["Resource"] == [arn, arn + ":*"]
