"""run / submit / map through a backend registered by a plugin."""

from __future__ import annotations

import concurrent.futures
import io
import time

from typing import ClassVar

import pytest

import lambdarun
from lambdarun import hookimpl
from lambdarun.backends import Backend
from lambdarun.errors import BackendNotInstalledError, UnknownBackendError, UnpicklableArgumentError


def square(x):
    print(f"squaring {x}")
    return x * x


def fail_on_three(x):
    if x == 3:
        raise KeyError("three")
    return x


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code


def raise_custom():
    raise CustomError(42, "nope")


def test_run_returns_the_result(inprocess_session):
    assert lambdarun.run(square, 7, session=inprocess_session) == 49
    assert lambdarun.run(divmod, 17, 5, session=inprocess_session) == (3, 2)
    assert lambdarun.run(sorted, [3, 1, 2], reverse=True, session=inprocess_session) == [3, 2, 1]


def test_run_raises_the_functions_own_exception_with_remote_traceback(inprocess_session):
    with pytest.raises(CustomError) as info:
        lambdarun.run(raise_custom, session=inprocess_session)
    assert info.value.code == 42
    assert "raise CustomError(42" in info.value.remote_traceback
    assert any("Remote traceback" in note for note in info.value.__notes__)


def test_submit_returns_a_future_with_output(inprocess_session):
    future = lambdarun.submit(square, 5, session=inprocess_session)
    assert isinstance(future, concurrent.futures.Future)
    done = []
    future.add_done_callback(done.append)
    assert future.result(timeout=10) == 25
    assert future.stdout == "squaring 5\n"
    assert done == [future]
    assert future.exception() is None


def test_map_yields_in_input_order(inprocess_session):
    assert list(lambdarun.map(square, range(20), session=inprocess_session, progress=False)) == [
        x * x for x in range(20)
    ]


def test_map_raises_first_failure_or_returns_exceptions(inprocess_session):
    results = lambdarun.map(fail_on_three, range(6), session=inprocess_session)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="three"):
        next(results)
    mixed = list(lambdarun.map(fail_on_three, range(5), return_exceptions=True, session=inprocess_session))
    assert mixed[:3] == [0, 1, 2] and isinstance(mixed[3], KeyError) and mixed[4] == 4


def test_map_progress_bar_only_when_asked(inprocess_session, monkeypatch):
    fake_tty = io.StringIO()
    fake_tty.isatty = lambda: True
    monkeypatch.setattr("sys.stderr", fake_tty)
    assert list(lambdarun.map(square, range(4), session=inprocess_session)) == [0, 1, 4, 9]
    assert "4/4" in fake_tty.getvalue()
    fake_tty.truncate(0)
    list(lambdarun.map(square, range(4), session=inprocess_session, progress=False))
    assert fake_tty.getvalue().strip("\x00") == ""


def test_backends_register_through_a_registry_keyed_by_id(inprocess_session):
    from lambdarun.backends import Backend, BackendRegistry
    from lambdarun.errors import PluginError

    registry = BackendRegistry()
    inprocess_session.pm.hook.lambdarun_register_backends(register=registry)
    assert "inprocess" in registry and registry.get("inprocess").id == "inprocess"

    class Impostor(Backend):
        id = "inprocess"

        def submit(self, func, args, kwargs):
            raise NotImplementedError

    with pytest.raises(PluginError, match="registered twice"):
        registry.add_backend(Impostor)
    with pytest.raises(PluginError, match="must subclass"):
        registry.add_backend(type("NotABackend", (), {"id": "x"}))


class DefaultPlugin:
    """Registers a backend class as the registry's default candidate."""

    def __init__(self, cls):
        self.cls = cls

    @hookimpl
    def lambdarun_register_backends(self, register):
        register.add_backend(self.cls, default=True)


class OtherBackend(Backend):
    """A second backend ("other") that runs nothing: it records that it was chosen."""

    id = "other"
    chosen: ClassVar[list] = []

    def submit(self, func, args, kwargs):
        OtherBackend.chosen.append(func)
        raise RuntimeError("the other backend runs nothing")


class OtherBackendPlugin:
    def __init__(self, *, default=False):
        self.default = default

    @hookimpl
    def lambdarun_register_backends(self, register):
        register.add_backend(OtherBackend, default=self.default)


@pytest.fixture
def inprocess_default(inprocess_session):
    """A plugin offering conftest's in-process backend as the default."""
    return DefaultPlugin(inprocess_session.backends.get("inprocess"))


@pytest.fixture
def unit_overrides(inprocess_session):
    settings = inprocess_session.settings
    return lambda **more: {"storage_url": settings.storage_url, "signing_key": settings.signing_key, **more}


def test_a_call_naming_no_backend_uses_the_registry_default(lambdarun_session, inprocess_default, unit_overrides):
    session = lambdarun_session(inprocess_default, OtherBackendPlugin(), overrides=unit_overrides())
    assert session.settings.backend is None and session.settings.source_of("backend") == "default"
    assert session.default_backend_id == "inprocess"
    assert lambdarun.run(square, 7, session=session) == 49
    assert session.backend().id == "inprocess"


def test_an_explicit_backend_wins_over_the_registry_default(lambdarun_session, inprocess_default, unit_overrides):
    OtherBackend.chosen.clear()
    session = lambdarun_session(
        inprocess_default, OtherBackendPlugin(), overrides=unit_overrides(backend="other")
    )
    assert session.default_backend_id == "other"
    with pytest.raises(RuntimeError, match="the other backend runs nothing"):
        lambdarun.run(square, 7, session=session)
    assert OtherBackend.chosen == [square]
    assert lambdarun.run(square, 3, backend="inprocess", session=session) == 9


def test_no_registered_default_is_refused_saying_what_to_do(lambdarun_session, inprocess_default, unit_overrides):
    OtherBackend.chosen.clear()
    session = lambdarun_session(OtherBackendPlugin(), overrides=unit_overrides())
    assert session.default_backend_id is None
    with pytest.raises(UnknownBackendError, match=r"no installed plugin registers a default backend \(installed backends: other\)"):
        lambdarun.run(square, 1, session=session)
    assert OtherBackend.chosen == []  # nothing ran on a backend the user did not choose


def test_two_default_candidates_are_refused_until_the_configuration_chooses(lambdarun_session, inprocess_default, unit_overrides):
    from lambdarun.backends import BackendRegistry
    from lambdarun.errors import PluginError

    registry = BackendRegistry()
    for plugin in (inprocess_default, OtherBackendPlugin(default=True)):
        plugin.lambdarun_register_backends(register=registry)
    with pytest.raises(PluginError, match=r"several installed backends offer to be the default \(inprocess, other\)"):
        registry.default_id
    session = lambdarun_session(inprocess_default, OtherBackendPlugin(default=True), overrides=unit_overrides())
    with pytest.raises(PluginError, match="choose one with the configuration key backend"):
        lambdarun.run(square, 1, session=session)
    chosen = lambdarun_session(
        inprocess_default, OtherBackendPlugin(default=True), overrides=unit_overrides(backend="inprocess")
    )
    assert lambdarun.run(square, 5, session=chosen) == 25


def test_installed_plugins_make_covalent_the_default():
    """lambdarun-covalent registers itself as the default; temporal and durable do not."""
    from lambdarun.backends import BackendRegistry
    from lambdarun.plugins import make_plugin_manager

    pm = make_plugin_manager(environ={"LAMBDARUN_PLUGINS": "covalent,temporal,durable"})
    registry = BackendRegistry()
    pm.hook.lambdarun_register_backends(register=registry)
    assert {"covalent", "temporal", "durable"} <= set(registry.ids())
    assert registry.default_id == "covalent"


def test_unknown_backend_names_the_installed_ones(inprocess_session):
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'nope'; installed backends: .*inprocess"):
        lambdarun.run(square, 1, backend="nope", session=inprocess_session)


def test_known_but_missing_backend_says_what_to_install(lambdarun_session):
    session = lambdarun_session()  # entry points not loaded: no backend installed
    with pytest.raises(BackendNotInstalledError, match=r"pip install lambdarun-temporal"):
        lambdarun.run(square, 1, backend="temporal", session=session)


def test_unpicklable_argument_loses_nothing(inprocess_session):
    import threading

    lock = threading.Lock()
    with pytest.raises(UnpicklableArgumentError, match=r"argument 0"):
        lambdarun.submit(square, lock, session=inprocess_session)
    assert not lock.locked()


def test_call_options_derive_a_session(inprocess_session):
    derived = inprocess_session.derive({"polling": {"max_interval": 5.0}})
    assert derived.settings.section("polling").max_interval == 5.0
    assert inprocess_session.settings.section("polling").max_interval == 1.0
    assert derived.pm is inprocess_session.pm
    assert lambdarun.run(square, 3, session=inprocess_session, options={"polling": {"max_interval": 2.0}}) == 9


def test_cancel_a_running_future_marks_it_cancelled():
    future = lambdarun.LambdaFuture("t1")
    stopped = []
    future.set_canceller(lambda: stopped.append(True))
    future.mark_running()
    assert future.running()
    assert future.cancel() and future.cancelled() and stopped == [True]
    assert future.finish(1) is False  # a late result does not resurrect it
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()


def test_public_names_are_pinned():
    assert set(lambdarun.__all__) >= {"run", "submit", "map", "hookimpl", "LambdaFuture", "LambdarunError"}
    for name in lambdarun.__all__:
        assert getattr(lambdarun, name) is not None


class SubmittedObserver:
    """A plugin following every submitted call (as the dashboard's run journal does)."""

    def __init__(self):
        self.calls = []

    @lambdarun.hookimpl
    def lambdarun_tasks_submitted(self, session, backend, func, futures, kind):
        self.calls.append((session, backend.id, func, list(futures), kind))


def test_submitted_tasks_reach_the_hook(inprocess_session):
    observer = SubmittedObserver()
    inprocess_session.pm.register(observer)
    future = lambdarun.submit(square, 3, session=inprocess_session)
    assert list(lambdarun.map(square, [1, 2], session=inprocess_session, progress=False)) == [1, 4]
    assert future.result() == 9
    (s1, b1, f1, futures1, kind1), (s2, b2, f2, futures2, kind2) = observer.calls
    assert (s1, b1, f1, futures1, kind1) == (inprocess_session, "inprocess", square, [future], "submit")
    assert (s2, b2, f2, kind2) == (inprocess_session, "inprocess", square, "map")
    assert [f.result() for f in futures2] == [1, 4]


def test_the_hook_can_be_called_directly(inprocess_session):
    observer = SubmittedObserver()
    inprocess_session.pm.register(observer)
    backend = inprocess_session.backend()
    future = backend.submit(square, (5,), {})
    inprocess_session.pm.hook.lambdarun_tasks_submitted(
        session=inprocess_session, backend=backend, func=square, futures=[future], kind="submit"
    )
    assert observer.calls == [(inprocess_session, "inprocess", square, [future], "submit")]
    assert future.result() == 25
