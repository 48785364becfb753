"""The covalent plugin declares the one permission ``lambdarun deploy`` grants for it (hook
``lambdarun_deploy_resources``): invoking the function itself, its own on-failure destination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lambdarun_covalent.plugin
from lambdarun.deploy import DeployResources
from lambdarun.deploy.policy import execution_policy


def test_the_plugin_declares_the_self_destination_statement(lambdarun_session: Callable[..., Any]) -> None:
    session = lambdarun_session(lambdarun_covalent.plugin)
    register = DeployResources()
    session.pm.hook.lambdarun_deploy_resources(settings=session.settings, register=register)
    assert register.tables == [] and register.environment == {}
    (statement,) = register.statements
    doc = execution_policy(
        function_name="fn", region="eu-west-1", account="210987654321", bucket="b", prefix="p", statements=[statement]
    )
    granted = [s for s in doc["Statement"] if s["Sid"] == "LambdarunSelfDestination"]
    assert granted == [
        {
            "Sid": "LambdarunSelfDestination",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": "arn:aws:lambda:eu-west-1:210987654321:function:fn",
        }
    ]
    # and only there: no other statement of the policy lets the role invoke anything
    assert all("lambda:" not in str(s["Action"]) for s in doc["Statement"] if s["Sid"] != "LambdarunSelfDestination")
