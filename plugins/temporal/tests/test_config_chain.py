"""Client config resolution: TEMPORAL_CONFIG_FILE -> $LAMBDA_TASK_ROOT/temporal.toml ->
./temporal.toml, TEMPORAL_PROFILE, environment over file, TEMPORAL_TASK_QUEUE."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.common import WorkerDeploymentVersion

from lambdarun_temporal.errors import LambdaWorkerConfigError
from lambdarun_temporal.lambda_worker import LambdaWorkerConfig, load_client_profile, run_worker

VERSION = WorkerDeploymentVersion(deployment_name="dep", build_id="b1")


def toml(path: Path, address: str, namespace: str = "ns", extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[profile.default]\naddress = "{address}"\nnamespace = "{namespace}"\n{extra}'
        '[profile.staging]\naddress = "staging:7233"\nnamespace = "staging-ns"\n'
    )
    return path


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("TEMPORAL_CONFIG_FILE", "LAMBDA_TASK_ROOT", "TEMPORAL_PROFILE", "TEMPORAL_ADDRESS",
                "TEMPORAL_NAMESPACE", "TEMPORAL_TASK_QUEUE", "TEMPORAL_API_KEY", "TEMPORAL_TLS"):
        monkeypatch.delenv(key, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return monkeypatch


def address_of(env: dict[str, str] | None = None) -> str | None:
    return load_client_profile(env).to_client_connect_config().get("target_host")


def test_explicit_file_wins(clean_env, tmp_path):
    explicit = toml(tmp_path / "explicit.toml", "explicit:1")
    toml(tmp_path / "root" / "temporal.toml", "root:1")
    toml(Path.cwd() / "temporal.toml", "cwd:1")
    env = {"TEMPORAL_CONFIG_FILE": str(explicit), "LAMBDA_TASK_ROOT": str(tmp_path / "root")}
    assert address_of(env) == "explicit:1"


def test_task_root_before_cwd(clean_env, tmp_path):
    toml(tmp_path / "root" / "temporal.toml", "root:1")
    toml(Path.cwd() / "temporal.toml", "cwd:1")
    assert address_of({"LAMBDA_TASK_ROOT": str(tmp_path / "root")}) == "root:1"


def test_cwd_used_inside_lambda_when_task_root_has_no_file(clean_env, tmp_path):
    # the reference skips this step when LAMBDA_TASK_ROOT is set
    (tmp_path / "root").mkdir()
    toml(Path.cwd() / "temporal.toml", "cwd:1")
    assert address_of({"LAMBDA_TASK_ROOT": str(tmp_path / "root")}) == "cwd:1"


def test_no_file_means_environment_only(clean_env):
    assert address_of({}) is None
    assert address_of({"TEMPORAL_ADDRESS": "env:1"}) == "env:1"


def test_profile_and_env_over_file(clean_env, tmp_path):
    path = toml(Path.cwd() / "temporal.toml", "cwd:1")
    profile = load_client_profile({"TEMPORAL_PROFILE": "staging"}).to_client_connect_config()
    assert (profile.get("target_host"), profile.get("namespace")) == ("staging:7233", "staging-ns")
    over = load_client_profile(
        {"TEMPORAL_NAMESPACE": "from-env", "TEMPORAL_API_KEY": "secret", "TEMPORAL_CONFIG_FILE": str(path)}
    ).to_client_connect_config()
    assert over.get("target_host") == "cwd:1"
    assert over.get("namespace") == "from-env"
    assert over.get("api_key") == "secret"


def test_missing_explicit_file_is_an_error(clean_env, tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(LambdaWorkerConfigError, match="nope.toml does not exist"):
        load_client_profile({"TEMPORAL_CONFIG_FILE": str(missing)})


def test_bad_key_names_file_and_key(clean_env, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[profile.default]\naddres = "x:1"\n')
    with pytest.raises(LambdaWorkerConfigError) as info:
        load_client_profile({"TEMPORAL_CONFIG_FILE": str(bad)})
    assert str(bad) in str(info.value)
    assert "addres" in str(info.value)


def test_bad_value_type_names_file(clean_env):
    bad = Path.cwd() / "temporal.toml"
    bad.write_text("[profile.default]\naddress = 12\n")
    with pytest.raises(LambdaWorkerConfigError) as info:
        load_client_profile({})
    assert str(bad) in str(info.value) and "address = 12" in str(info.value)


def test_unknown_profile_names_file_and_profile(clean_env):
    path = toml(Path.cwd() / "temporal.toml", "cwd:1")
    with pytest.raises(LambdaWorkerConfigError) as info:
        load_client_profile({"TEMPORAL_PROFILE": "prod"})
    assert str(path) in str(info.value) and "prod" in str(info.value)


def test_run_worker_cold_start_reads_chain_and_task_queue(clean_env, tmp_path):
    toml(Path.cwd() / "temporal.toml", "cwd:1", namespace="cold")
    clean_env.setenv("TEMPORAL_TASK_QUEUE", "env-queue")
    handler = run_worker(VERSION, lambda config: None)
    config: LambdaWorkerConfig = handler.new_config()
    assert config.client_connect_config["target_host"] == "cwd:1"
    assert config.client_connect_config["namespace"] == "cold"
    assert config.worker_config["task_queue"] == "env-queue"
    deployment = config.worker_config["deployment_config"]
    assert deployment.use_worker_versioning and deployment.version == VERSION
    assert config.worker_config["disable_eager_activity_execution"] is True
    assert config.worker_config["graceful_shutdown_timeout"] == timedelta(seconds=1)
    assert config.idle_timeout == timedelta(seconds=1)
    # each invocation gets fresh copies
    config.worker_config["task_queue"] = "changed"
    assert handler.new_config().worker_config["task_queue"] == "env-queue"


def test_run_worker_bad_file_fails_at_cold_start(clean_env):
    (Path.cwd() / "temporal.toml").write_text("[profile.default\n")
    with pytest.raises(LambdaWorkerConfigError, match="temporal.toml"):
        run_worker(VERSION, lambda config: None)


def test_run_worker_needs_a_full_version(clean_env):
    with pytest.raises(LambdaWorkerConfigError, match="build_id"):
        run_worker(WorkerDeploymentVersion(deployment_name="dep", build_id=""), lambda config: None)
