"""run / submit / map through a backend registered by a plugin."""

from __future__ import annotations

import concurrent.futures
import io
import time

import pytest

import lambdarun
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
