"""Version coupling (the function states its versions; a mismatch stops before any task
runs) and DepsPip layers (installed once per requirement set, or a clear error)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import cloudpickle
import pytest

import lambdarun
from lambdarun.deploy.plan import MANAGED_TAG, MANAGED_VALUE
from lambdarun.local.testing import create_function
from lambdarun_covalent import versions
from lambdarun_covalent.electrons import electron_task
from lambdarun_covalent.layers import DependencyInstallError, ensure_layer, requirement_set
from lambdarun_covalent.versions import VersionMismatchError

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def touch(path):
    Path(path).write_text("ran")
    return "ran"


@pytest.fixture(autouse=True)
def fresh_version_cache():
    versions.forget()
    yield
    versions.forget()


def test_the_function_states_its_versions(session):
    backend = session.backend("covalent")
    remote = versions.remote_versions(backend.runtime_session, backend.function_name)
    assert remote == versions.local_versions()  # the local target runs this very environment
    assert set(remote) == {"python", "lambdarun", "lambdarun_covalent", "cloudpickle", "covalent"}


@pytest.mark.parametrize("package", ["cloudpickle", "python", "lambdarun"])
def test_a_version_mismatch_stops_before_the_task_runs(session, tmp_path, monkeypatch, package):
    real = versions.local_versions()
    monkeypatch.setattr(versions, "local_versions", lambda: {**real, package: "2.0.0"})
    marker = tmp_path / "ran"
    with pytest.raises(VersionMismatchError) as info:
        lambdarun.run(touch, str(marker), backend="covalent", session=session)
    message = str(info.value)
    assert f"{package} {real[package]}" in message and f"{package} 2.0.0" in message
    assert "no task was run" in message and "lambdarun deploy --function" in message
    assert not marker.exists()


def test_a_function_that_cannot_state_its_versions_is_refused(make_session, local_stack, tmp_path):
    """An old deployment (no version probe): refused with what to do, nothing runs."""
    name = "lambdarun-covalent-old-deployment"
    create_function(
        local_stack.client("lambda"), name, "def handler(event, context):\n    return {'hello': 1}\n",
        Tags={MANAGED_TAG: MANAGED_VALUE},  # deployed: the local target uses it as is
    )
    session = make_session(function_name=name)
    marker = tmp_path / "ran"
    with pytest.raises(VersionMismatchError, match="did not state its versions.*Redeploy it"):
        lambdarun.run(touch, str(marker), backend="covalent", session=session)
    assert not marker.exists()


def test_requirement_sets_are_normalized():
    assert requirement_set(["b==1", "a"], "# comment\n\na  \nc>=2 # why\n") == ("a", "b==1", "c>=2")
    assert requirement_set([], "") == ()


def test_a_requirement_that_cannot_install_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # fail offline and at once: no index is asked
    with pytest.raises(DependencyInstallError, match="pip could not install.*no-such-package-for-lambdarun-xyz") as info:
        ensure_layer(("no-such-package-for-lambdarun-xyz==0.0.1",), root=tmp_path, what="electron 'needy'")
    assert "electron 'needy'" in str(info.value) and "did not run" in str(info.value)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # no half-built layer left


def test_electron_task_takes_deps_pip_off_covalents_callable():
    import covalent as ct
    from covalent._workflow.transport import TransportableObject
    from covalent.executor.utils.wrappers import wrapper_fn

    def electron(x):
        return x

    pip = ct.DepsPip(packages=["mergedeep==1.3.4"]).apply()
    bash = ct.DepsBash(["true"]).apply()
    call = functools.partial(wrapper_fn, TransportableObject(electron), [pip, bash], [])
    task = electron_task(call)
    assert task.name == "electron" and task.covalent_wrapper
    assert task.requirements == ("mergedeep==1.3.4",)
    assert task.function.args[1] == [bash]  # DepsBash still runs on Lambda; pip does not
    plain = electron_task(touch)
    assert (plain.name, plain.requirements, plain.covalent_wrapper) == ("touch", (), False)


def test_covalent_version_mismatch_stops_an_electron(session, tmp_path, monkeypatch):
    import asyncio

    from covalent._workflow.transport import TransportableObject
    from covalent.executor.utils.wrappers import wrapper_fn

    from lambdarun_covalent.executor import AWSLambdaExecutor

    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(tmp_path / "covalent"))
    real = versions.local_versions()
    monkeypatch.setattr(versions, "local_versions", lambda: {**real, "covalent": "0.999.0"})
    executor = AWSLambdaExecutor(session=session, function_name="lambdarun-covalent-tests")
    marker = tmp_path / "ran"
    call = functools.partial(wrapper_fn, TransportableObject(touch), [], [])
    with pytest.raises(VersionMismatchError, match=r"runs Covalent \d+\.\d+.*this Covalent server runs 0\.999\.0"):
        asyncio.run(executor.run(call, [TransportableObject(str(marker))], {}, {"dispatch_id": "d", "node_id": 0}))
    assert not marker.exists()


def test_deps_pip_on_a_target_that_cannot_create_the_function_says_what_to_deploy(
    make_session, local_stack, tmp_path, monkeypatch
):
    """The aws target never creates functions: the layer's function must be deployed."""
    import asyncio

    import covalent as ct
    from covalent._workflow.transport import TransportableObject
    from covalent.executor.utils.wrappers import wrapper_fn

    from lambdarun.errors import FunctionNotFoundError
    from lambdarun_covalent.executor import AWSLambdaExecutor

    for key, value in local_stack.environment().items():  # the aws target, on the local stack's endpoints
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(tmp_path / "covalent"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    session = make_session(core={"target": "aws", "aws": {
        "lambda_endpoint_url": local_stack.endpoints.url("lambda"), "s3_endpoint_url": local_stack.endpoints.url("s3"),
    }})
    executor = AWSLambdaExecutor(session=session, function_name="lambdarun-covalent-tests")
    marker = tmp_path / "ran"
    pip = ct.DepsPip(packages=["mergedeep==1.3.4"]).apply()
    call = functools.partial(wrapper_fn, TransportableObject(touch), [pip], [])
    with pytest.raises(FunctionNotFoundError) as info:
        asyncio.run(executor.run(call, [TransportableObject(str(marker))], {}, {"dispatch_id": "d", "node_id": 0}))
    message = str(info.value)
    assert "electron 'touch' needs DepsPip mergedeep==1.3.4" in message
    assert "lambdarun deploy --function lambdarun-covalent-tests-deps-" in message
    requirements = Path(message.split("LAMBDARUN_DEPLOY__REQUIREMENTS=", 1)[1].split()[0])
    assert requirements.read_text() == "mergedeep==1.3.4\n"  # the layer's own file, ready for deploy
    assert not marker.exists()


@pytest.mark.parametrize(
    "event",
    [
        {versions.PROBE_FIELD: "1"},
        {versions.PROBE_FIELD: 1, "lambdarun": 1, "call": "Zm9yZ2Vk", "result_url": "s3://elsewhere/x"},
        {versions.PROBE_FIELD: 1, "lambdarun_covalent": {"task_id": "t", "attempt": 1}},
    ],
)
def test_only_the_exact_probe_is_answered(session, event):
    """The probe runs nothing and answers only ``{probe: 1}``: a probe field riding on another
    event (a forged call, a task record) is not a probe, and the call is still verified."""
    backend = session.backend("covalent")
    lam = backend.runtime_session.target.client("lambda")
    response = lam.invoke(FunctionName=backend.function_name, Payload=json.dumps(event).encode())
    body = json.loads(response["Payload"].read())
    assert versions.PROBE_FIELD not in body
    assert response.get("FunctionError") or body.get("outcome") or "errorType" in body


def test_a_requirement_is_never_run_through_a_shell(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    marker = tmp_path / "pwned"
    with pytest.raises(DependencyInstallError):
        ensure_layer((f"nothing; touch {marker}", f"$(touch {marker})"), root=tmp_path / "layers")
    assert not marker.exists()
