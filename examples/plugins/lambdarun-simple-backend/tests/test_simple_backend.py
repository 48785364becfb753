"""The example backend passes lambdarun's backend conformance suite on the local target."""

import pytest

import lambdarun
import lambdarun_simple_backend
from lambdarun.testing import tasks
from lambdarun.testing.conformance import BackendConformance


@pytest.fixture
def session(lambdarun_session, local_stack):
    return lambdarun_session(
        lambdarun_simple_backend,
        overrides={"backend": "simple", "target": "local", "progress": False,
                   "local": {"state_dir": str(local_stack.state_dir)}},
    )


class TestSimpleBackend(BackendConformance):
    @pytest.fixture
    def backend_session(self, session):
        return session

    def timeout_options(self, seconds):
        return {"simple": {"timeout": seconds}}


def test_the_function_is_the_lambdarun_runtime(session):
    assert lambdarun.run(tasks.add, 1, 2, session=session) == 3
    config = session.target.client("lambda").get_function(FunctionName="lambdarun-simple")["Configuration"]
    assert config["Handler"] == "lambdarun.runtime.handler"
