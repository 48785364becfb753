"""The backend base class: one runtime-function helper for every backend."""

from __future__ import annotations

import threading

import pytest

from lambdarun import hookimpl
from lambdarun.backends import Backend
from lambdarun.types import FunctionSpec


class RecordingTarget:
    """A target (through lambdarun_make_target) that records the functions it is asked for."""

    name = "recording"
    region = "us-east-1"
    concurrency_limit = None

    def __init__(self):
        self.specs = []
        self.lock = threading.Lock()

    def ensure_function(self, spec):
        with self.lock:
            self.specs.append(spec)
        return f"created-{spec.name}"

    def close(self):
        pass


class TargetPlugin:
    def __init__(self):
        self.target = RecordingTarget()

    @hookimpl
    def lambdarun_make_target(self, name, settings):
        return self.target if name == "recording" else None


class SpecBackend(Backend):
    id = "spec"

    def function_spec(self):
        return FunctionSpec(name="fn", timeout=30, memory_size=256,
                            environment={**self.function_environment(storage_url="s3://b/p"), "MINE": "1"})

    def submit(self, func, args, kwargs):
        raise NotImplementedError


class NoFunctionBackend(SpecBackend):
    id = "nofunction"
    function_spec = Backend.function_spec


def test_the_runtime_function_is_created_once_from_the_spec(lambdarun_session):
    plugin = TargetPlugin()
    session = lambdarun_session(plugin, overrides={"target": "recording"})
    backend = SpecBackend(session)
    names = []
    threads = [threading.Thread(target=lambda: names.append(backend.function_name)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert names == ["created-fn"] * 8
    (spec,) = plugin.target.specs
    assert spec.environment["MINE"] == "1"
    # the shared builder: what every runtime function needs
    assert spec.environment["LAMBDARUN_TARGET"] == "aws"
    assert spec.environment["LAMBDARUN_STORAGE_URL"] == "s3://b/p"
    assert spec.environment["LAMBDARUN_REGION"] == "us-east-1"


def test_a_backend_without_a_function_says_so(lambdarun_session):
    session = lambdarun_session(TargetPlugin(), overrides={"target": "recording"})
    with pytest.raises(NotImplementedError, match="nofunction"):
        NoFunctionBackend(session).function_name


def test_one_environment_builder_for_backends_and_deploy(lambdarun_session):
    import lambdarun_covalent.plugin

    from lambdarun.environment import function_environment

    session = lambdarun_session(
        lambdarun_covalent.plugin,
        overrides={"log_level": "WARNING", "envelope_max_age": 120.0, "covalent": {"memory": 1024, "keep_objects": True},
                   "local": {"idle_timeout": 5.0}, "signing_key_secret": "arn:secret"},
    )
    settings = session.settings
    created = function_environment(settings, storage_url="s3://b/p")
    assert created == {
        "LAMBDARUN_TARGET": "aws", "LAMBDARUN_REGION": settings.region, "LAMBDARUN_STORAGE_URL": "s3://b/p",
        "LAMBDARUN_SIGNING_KEY_SECRET": "arn:secret", "LAMBDARUN_ENVELOPE_MAX_AGE": "120.0",
    }
    deployed = function_environment(settings, storage_url="s3://b/p", function_name="fn", forward_settings=True)
    assert deployed == {
        **created, "LAMBDARUN_FUNCTION_NAME": "fn", "LAMBDARUN_LOG_LEVEL": "WARNING",
        "LAMBDARUN_COVALENT__MEMORY": "1024", "LAMBDARUN_COVALENT__KEEP_OBJECTS": "true",
    }  # [local] describes the caller's machine: never forwarded
