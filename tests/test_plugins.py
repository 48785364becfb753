"""Plugin manager: built-ins, entry points (real distributions on sys.path), allow/block lists, tracing."""

from __future__ import annotations

import importlib.metadata
import pytest
import structlog
import structlog.testing

from lambdarun import hookimpl
from lambdarun.plugins import DEFAULT_PLUGINS, PluginLoadWarning, describe_plugins, make_plugin_manager

GOOD_PLUGIN = """
from lambdarun import hookimpl
from lambdarun.types import Decoded, Encoded

@hookimpl
def lambdarun_decode(encoded, session):
    if encoded.tag == "upper":
        return Decoded(encoded.data.decode().lower())
    return None

@hookimpl
def lambdarun_encode(value, session):
    if isinstance(value, str) and value.startswith("shout:"):
        return Encoded("upper", value.upper().encode())
    return None
"""


def test_builtins_are_registered_like_plugins():
    pm = make_plugin_manager(load_entrypoints=False, environ={})
    names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert set(DEFAULT_PLUGINS) <= names
    info = {i.name: i for i in describe_plugins(pm, include_builtin=True)}
    assert info["lambdarun.serializers"].hooks == ("lambdarun_decode", "lambdarun_encode")
    assert info["lambdarun.serializers"].distribution == "lambdarun"
    assert describe_plugins(pm) == []  # without --all only third-party plugins are listed


def test_entry_point_plugin_is_loaded_with_its_distribution(make_distribution, lambdarun_session):
    make_distribution(
        "lambdarun-shout", "1.2.3", {"shout": "lr_shout_plugin"}, {"lr_shout_plugin": GOOD_PLUGIN}
    )
    pm = make_plugin_manager(environ={"LAMBDARUN_PLUGINS": "shout"})
    assert pm.get_plugin("shout") is not None
    (info,) = [i for i in describe_plugins(pm) if i.name == "shout"]
    assert (info.distribution, info.version) == ("lambdarun-shout", "1.2.3")
    assert info.hooks == ("lambdarun_decode", "lambdarun_encode")


def test_broken_entry_point_is_skipped_with_a_warning(make_distribution, caplog):
    make_distribution("lambdarun-broken", "0.0.1", {"broken": "lr_no_such_module_anywhere"})
    make_distribution("lambdarun-shout", "1.2.3", {"shout": "lr_shout_plugin"}, {"lr_shout_plugin": GOOD_PLUGIN})
    with pytest.warns(PluginLoadWarning, match=r"'broken' \(lambdarun-broken 0.0.1\) failed to load"):
        pm = make_plugin_manager(environ={"LAMBDARUN_PLUGINS": "broken,shout"})
    assert pm.get_plugin("broken") is None
    assert pm.get_plugin("shout") is not None  # the good one still loads
    (failed,) = pm.failed
    assert failed.name == "broken" and failed.distribution.version == "0.0.1"
    assert "ModuleNotFoundError" in failed.error


def test_autoload_can_be_disabled_and_plugins_blocked(make_distribution):
    make_distribution("lambdarun-shout", "1.2.3", {"shout": "lr_shout_plugin"}, {"lr_shout_plugin": GOOD_PLUGIN})
    pm = make_plugin_manager(environ={"LAMBDARUN_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert pm.get_plugin("shout") is None
    pm = make_plugin_manager(environ={"LAMBDARUN_BLOCK_PLUGINS": "shout"})
    assert pm.get_plugin("shout") is None and pm.is_blocked("shout")
    pm = make_plugin_manager(block=["lambdarun.polling"], load_entrypoints=False, environ={})
    assert pm.get_plugin("lambdarun.polling") is None


@pytest.mark.parametrize("backend", ["covalent", "temporal", "durable"])
def test_installed_backend_distributions_are_discovered(backend):
    """The backends installed by the test command are found through the entry-point group."""
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="lambdarun")}
    assert backend in eps, f"lambdarun-{backend} is not installed (the test command installs it)"
    pm = make_plugin_manager(environ={"LAMBDARUN_PLUGINS": backend})
    (info,) = [i for i in describe_plugins(pm) if i.name == backend]
    assert info.distribution == f"lambdarun-{backend}"
    assert "lambdarun_register_backends" in info.hooks


def test_check_pending_refuses_a_misspelled_hook():
    class Typo:
        @hookimpl
        def lambdarun_encoed(self, value, session):  # no such hook
            return None

    import pluggy

    with pytest.raises(pluggy.PluginValidationError, match="lambdarun_encoed"):
        make_plugin_manager([Typo()], load_entrypoints=False, environ={})


def test_tracing_logs_hook_calls_and_can_be_undone():
    pm = make_plugin_manager(load_entrypoints=False, environ={})
    undo = pm.enable_trace_logging()
    with structlog.testing.capture_logs() as logs:
        pm.hook.lambdarun_make_target(name="nowhere", settings=None)
    calls = [e for e in logs if e["event"] == "hook call"]
    assert calls[0]["hook"] == "lambdarun_make_target"
    assert "lambdarun.targets" in calls[0]["impls"]
    assert [e["result"] for e in logs if e["event"] == "hook result"] == ["None"]
    undo()
    with structlog.testing.capture_logs() as logs:
        pm.hook.lambdarun_make_target(name="nowhere", settings=None)
    assert logs == []


def test_trace_variable_turns_tracing_on():
    pm = make_plugin_manager(load_entrypoints=False, environ={"LAMBDARUN_TRACE_PLUGINS": "1"})
    with structlog.testing.capture_logs() as logs:
        pm.hook.lambdarun_make_target(name="nowhere", settings=None)
    assert any(e.get("hook") == "lambdarun_make_target" for e in logs)
