"""The temporal backend asks its target what it can do, never its name."""

from __future__ import annotations

import pytest

import lambdarun_temporal.plugin
from lambdarun import hookimpl
from lambdarun.errors import ConfigError
from lambdarun.targets import Boto3Target


class FarAwayTarget(Boto3Target):
    """A target called "local" whose functions do not run on this machine."""

    runs_on_this_machine = False


class FarAwayPlugin:
    @hookimpl(tryfirst=True)
    def lambdarun_make_target(self, name, settings):
        return FarAwayTarget(settings, name="local") if name == "local" else None


def test_no_dev_server_for_a_target_whose_functions_run_elsewhere(lambdarun_session):
    session = lambdarun_session(lambdarun_temporal.plugin, FarAwayPlugin(), overrides={"target": "local"})
    backend = session.backend("temporal")
    assert session.target.name == "local" and session.target.runs_on_this_machine is False
    with pytest.raises(ConfigError, match=r"set \[temporal\] address"):
        backend.address


def test_a_configured_address_wins(lambdarun_session):
    session = lambdarun_session(lambdarun_temporal.plugin, FarAwayPlugin(),
                                overrides={"target": "local", "temporal": {"address": "temporal.example:7233"}})
    assert session.backend("temporal").address == "temporal.example:7233"
