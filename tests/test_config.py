"""Layered configuration: defaults < file < environment < call options."""

from __future__ import annotations

import attrs
import pytest

from lambdarun import hookimpl
from lambdarun.config import ConfigRegistry, load_settings
from lambdarun.errors import ConfigError


@attrs.define(kw_only=True)
class WidgetConfig:
    size: int = 3
    ratio: float = 0.5
    enabled: bool = True
    label: str | None = None
    tags: list[str] = attrs.field(factory=list)


class WidgetPlugin:
    @hookimpl
    def lambdarun_register_config(self, register):
        register.add_section("widget", WidgetConfig)


def registry():
    reg = ConfigRegistry()
    reg.add_section("widget", WidgetConfig)
    return reg


def test_layers_override_in_order(tmp_path):
    (tmp_path / "lambdarun.toml").write_text(
        'backend = "durable"\nregion = "eu-west-1"\n[widget]\nsize = 10\nratio = 2\nlabel = "file"\n'
    )
    env = {"LAMBDARUN_REGION": "ap-south-1", "LAMBDARUN_WIDGET__SIZE": "20", "LAMBDARUN_WIDGET__TAGS": "a, b"}
    settings = load_settings(registry(), cwd=tmp_path, environ=env, overrides={"widget": {"size": 30}})
    assert settings.backend == "durable"  # file
    assert settings.region == "ap-south-1"  # env beats file
    widget = settings.section("widget")
    assert (widget.size, widget.ratio, widget.label, widget.tags) == (30, 2.0, "file", ["a", "b"])
    assert settings.source_of("widget.size") == "call options"
    assert settings.source_of("region") == "LAMBDARUN_REGION"
    assert settings.source_of("backend") == str(tmp_path / "lambdarun.toml")
    assert settings.source_of("target") == "default"


def test_zero_and_false_are_values_not_unset(tmp_path):
    (tmp_path / "lambdarun.toml").write_text("[widget]\nsize = 0\nenabled = false\n")
    widget = load_settings(registry(), cwd=tmp_path, environ={}).section("widget")
    assert widget.size == 0 and widget.enabled is False
    widget = load_settings(registry(), cwd=tmp_path, environ={"LAMBDARUN_WIDGET__ENABLED": "0"}).section("widget")
    assert widget.enabled is False


def test_pyproject_tool_table_and_parent_directories(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname="x"\n[tool.lambdarun]\ntarget = "aws"\n[tool.lambdarun.widget]\nsize = 7\n')
    nested = tmp_path / "src" / "pkg"
    nested.mkdir(parents=True)
    settings = load_settings(registry(), cwd=nested, environ={})
    assert settings.target == "aws" and settings.section("widget").size == 7


def test_plugin_sections_come_through_the_hook(lambdarun_session):
    session = lambdarun_session(WidgetPlugin(), overrides={"widget": {"label": "hi"}})
    assert session.settings.section("widget").label == "hi"
    assert session.pm.hook.lambdarun_register_config(register=ConfigRegistry()) == []


@pytest.mark.parametrize(
    ("where", "content", "environ", "message"),
    [
        ("file", "backned = 'x'\n", {}, r"unknown config key 'backned' in .*lambdarun.toml; did you mean 'backend'\?"),
        ("file", "[widget]\nsise = 1\n", {}, r"unknown config key 'widget.sise' in .*lambdarun.toml; did you mean 'size'\?"),
        ("file", "[widget]\nsize = 'big'\n", {}, r"widget.size = 'big' from .*lambdarun.toml: expected an integer"),
        ("env", "", {"LAMBDARUN_WIDGET__RATIO": "lots"}, r"widget.ratio = 'lots' from LAMBDARUN_WIDGET__RATIO: expected a number"),
        ("env", "", {"LAMBDARUN_TARGETT": "aws"}, r"unknown config key 'targett' in LAMBDARUN_TARGETT; did you mean 'target'\?"),
        ("env", "", {"LAMBDARUN_LOG_LEVEL": "LOUD"}, r"log_level = 'LOUD' from LAMBDARUN_LOG_LEVEL: must be one of"),
        ("file", "[covalent]\ntimeout = 1\n", {}, r"configures the 'covalent' backend, which is not installed: pip install lambdarun-covalent"),
        ("file", "[wigdet]\nsize = 1\n", {}, r"unknown config key '\[wigdet\]'.*did you mean 'widget'\?"),
        ("file", "backend = \n", {}, r"is not valid TOML"),
    ],
)
def test_bad_keys_and_values_name_key_value_source_and_a_close_match(tmp_path, where, content, environ, message):
    (tmp_path / "lambdarun.toml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(registry(), cwd=tmp_path, environ=environ)


def test_bad_call_option_is_named(lambdarun_session):
    with pytest.raises(ConfigError, match=r"polling.max_interval = -1.0 from call options: must be greater than 0"):
        lambdarun_session(overrides={"polling": {"max_interval": -1}})


def test_control_variables_are_not_config_keys(tmp_path):
    env = {"LAMBDARUN_PLUGINS": "a", "LAMBDARUN_TRACE_PLUGINS": "1", "LAMBDARUN_DISABLE_PLUGIN_AUTOLOAD": "1"}
    settings = load_settings(registry(), cwd=tmp_path, environ=env)
    # nothing set the backend: it stays the registry's default (None until a session resolves it)
    assert settings.backend is None and settings.source_of("backend") == "default"


def test_the_default_backend_is_resolved_by_the_registry_and_overridable(tmp_path):
    from lambdarun.session import Session
    from lambdarun.plugins import make_plugin_manager

    pm = make_plugin_manager(environ={"LAMBDARUN_PLUGINS": "covalent,temporal,durable"})
    sessions = [Session(pm, cwd=tmp_path, environ={}), Session(pm, cwd=tmp_path, environ={"LAMBDARUN_BACKEND": "temporal"})]
    (tmp_path / "lambdarun.toml").write_text("backend = 'durable'\n")
    sessions.append(Session(pm, cwd=tmp_path, environ={}))
    try:
        assert sessions[0].settings.backend is None and sessions[0].default_backend_id == "covalent"
        assert sessions[1].default_backend_id == "temporal"
        assert sessions[2].default_backend_id == "durable"
    finally:
        for session in sessions:
            session.close()


def test_explicit_config_file(tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text("function_name = 'fn'\n")
    assert load_settings(registry(), cwd=tmp_path, environ={"LAMBDARUN_CONFIG": str(path)}).function_name == "fn"
    with pytest.raises(ConfigError, match="does not name a file"):
        load_settings(registry(), cwd=tmp_path, environ={"LAMBDARUN_CONFIG": str(tmp_path / "nope.toml")})


def test_section_classes_need_defaults_and_unique_names():
    @attrs.define
    class NoDefault:
        value: int

    reg = ConfigRegistry()
    with pytest.raises(ConfigError, match="field 'value' of .*NoDefault needs a default"):
        reg.add_section("x", NoDefault)
    reg.add_section("widget", WidgetConfig)
    with pytest.raises(ConfigError, match="declared twice"):
        reg.add_section("widget", attrs.make_class("Other", {"a": attrs.field(default=1)}))


@pytest.mark.parametrize(
    ("content", "environ", "message"),
    [
        ('signing_key = ""\n', {}, r"signing_key = '' from .*lambdarun.toml: a signing key must be at least 32 bytes \(this one has 0\)"),
        ('signing_key = "short"\n', {}, r"at least 32 bytes \(this one has 5\)"),
        ("signing_key = 12345678901234567890123456789012345\n", {}, r"signing_key = .* expected a string"),
        ("", {"LAMBDARUN_SIGNING_KEY": "x" * 31}, r"signing_key = 'x{31}' from LAMBDARUN_SIGNING_KEY: a signing key must be at least 32"),
        ('signing_key_secret = "  "\n', {}, r"signing_key_secret = '  ' .*must not be empty"),
        ("allow_unsigned = 'yes'\n", {}, r"allow_unsigned = 'yes' .*expected a boolean"),
        ("envelope_max_age = 0\n", {}, r"envelope_max_age = 0.0 .*must be greater than 0"),
    ],
)
def test_bad_signing_settings_are_config_errors(tmp_path, content, environ, message):
    (tmp_path / "lambdarun.toml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(registry(), cwd=tmp_path, environ=environ)


def test_signing_settings_are_read(tmp_path):
    key = "k" * 32
    (tmp_path / "lambdarun.toml").write_text(f'signing_key = "{key}"\nenvelope_max_age = 60\n')
    settings = load_settings(registry(), cwd=tmp_path, environ={"LAMBDARUN_ALLOW_UNSIGNED": "true"})
    assert (settings.signing_key, settings.envelope_max_age, settings.allow_unsigned) == (key, 60.0, True)
    assert key not in repr(settings.core)  # the key never shows in a repr (logs, tracebacks)


def test_unreadable_config_files_are_config_errors(tmp_path):
    (tmp_path / "lambdarun.toml").write_bytes(b"backend = '\xff\xfe'\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(registry(), cwd=tmp_path, environ={})
    (tmp_path / "lambdarun.toml").unlink()
    (tmp_path / "lambdarun.toml").mkdir()
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_settings(registry(), cwd=tmp_path, environ={})
    with pytest.raises(ConfigError, match="does not name a file"):
        load_settings(registry(), cwd=tmp_path, environ={"LAMBDARUN_CONFIG": str(tmp_path / "lambdarun.toml")})
