"""``lambdarun deploy`` with the durable plugin, on moto: the role may checkpoint its own
durable executions, and with ``durable`` as the default backend the function is created with
``DurableConfig`` (AWS takes it only at creation); other backends' functions are not durable."""

from __future__ import annotations

import json
from typing import Any

from lambdarun.deploy import deploy, session_spec
from lambdarun.deploy.policy import POLICY_NAME

ACCOUNT = "123456789012"  # moto's account


def _create_function_requests(session: Any) -> list[dict[str, Any]]:
    """What deploy's Lambda client sends to CreateFunction (moto does not echo DurableConfig)."""
    sent: list[dict[str, Any]] = []
    lam = session.target.client("lambda")
    lam.meta.events.register("provide-client-params.lambda.CreateFunction",
                             lambda params, **_: sent.append(dict(params)))
    return sent


def test_a_durable_deploy_creates_a_durable_function_its_role_may_checkpoint(aws_session, boto, built):
    import lambdarun_durable.plugin

    session = aws_session(lambdarun_durable.plugin, backend="durable", durable={"execution_timeout": 3600})
    fn = session.settings.function_name
    spec = session_spec(session)
    assert spec.create_config == {"DurableConfig": {"ExecutionTimeout": 3600}}
    sent = _create_function_requests(session)
    deploy(session, package=built)
    assert [r["DurableConfig"] for r in sent] == [{"ExecutionTimeout": 3600}]
    doc = boto("iam").get_role_policy(RoleName=f"{fn}-role", PolicyName=POLICY_NAME)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    statement = {s["Sid"]: s for s in doc["Statement"]}["LambdarunDurableExecution"]
    assert statement == {
        "Sid": "LambdarunDurableExecution",
        "Effect": "Allow",
        "Action": ["lambda:CheckpointDurableExecution", "lambda:GetDurableExecutionState"],
        "Resource": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{fn}:*",  # itself only, never '*'
    }
    # deployed again: nothing to change (DurableConfig is not diffed as a configuration update)
    assert not deploy(session, package=built).changed


def test_another_default_backend_gets_no_durable_config(aws_session):
    import lambdarun_covalent.plugin
    import lambdarun_durable.plugin

    session = aws_session(lambdarun_covalent.plugin, lambdarun_durable.plugin, backend="covalent")
    assert session_spec(session).create_config == {}


def test_a_target_without_the_durable_api_falls_back_to_the_orchestrator(aws_session):
    """moto's Lambda has no durable-execution API: ``durable.api = "auto"`` asks and keeps the
    in-process orchestrator (its runtime function is the core one, not a durable one)."""
    import lambdarun_durable.plugin

    session = aws_session(lambdarun_durable.plugin)
    backend = session.backend("durable")
    assert backend.uses_api is False
    assert backend.function_spec().durable_config is None
    forced = aws_session(lambdarun_durable.plugin, durable={"api": "api"}).backend("durable")
    assert forced.uses_api is True
