"""An invocation's objects: freed when it returns (no reference cycles), and the host process's
existing objects kept out of its garbage collections (frozen during, unfrozen after)."""

from __future__ import annotations

import gc
import json
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from lambdarun_durable import DurableContext, durable_execution
from lambdarun_durable.exceptions import SuspendExecution
from lambdarun_durable.execution import DurableInvocationInput
from lambdarun_durable.service import DurableService
from lambdarun_durable.stores import SQLiteCheckpointStore


@pytest.fixture
def sqlite_store(tmp_path: Any) -> Iterator[SQLiteCheckpointStore]:
    s = SQLiteCheckpointStore(str(tmp_path / "durable.db"))
    yield s
    s.close()


def _input(store: SQLiteCheckpointStore, payload: dict) -> DurableInvocationInput:
    service = DurableService(store)
    arn = service.start_execution("memory", json.dumps(payload))
    event, _ = service.invocation_event(arn)
    inv = DurableInvocationInput.from_event(event)
    inv.store = store
    return inv


def test_invocation_state_is_freed_without_the_cyclic_collector(sqlite_store: SQLiteCheckpointStore) -> None:
    """Contexts (root, child, map items), their loggers and the execution state form no cycle, so
    the operations of a finished invocation are released at once, not at some later full
    collection (which would make later invocations pay for this one's history)."""
    refs: list[weakref.ref] = []

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> int:
        refs.append(weakref.ref(ctx))
        refs.append(weakref.ref(ctx.state))
        total = sum(ctx.step(lambda _, i=i: i, name="s") for i in range(event["steps"]))

        def child(c: DurableContext) -> int:
            refs.append(weakref.ref(c))
            c.logger.info("in child")
            return c.step(lambda _: 1, name="in-child")

        total += ctx.run_in_child_context(child, name="child")
        res = ctx.map([1, 2, 3], lambda c, x, i, items: (refs.append(weakref.ref(c)), c.step(lambda _: x, name="m"))[1])
        return total + sum(res.get_results())

    inv = _input(sqlite_store, {"steps": 50})
    gc.collect()
    gc.disable()
    try:
        out = handler(inv, None)
        assert out == {"Status": "SUCCEEDED", "Result": json.dumps(sum(range(50)) + 1 + 6)}
        assert len(refs) == 6
        alive = [r() for r in refs if r() is not None]
        assert alive == [], f"still referenced after the invocation returned: {alive}"
    finally:
        gc.enable()


def test_logger_is_silent_while_replaying_without_referencing_the_context(sqlite_store: SQLiteCheckpointStore) -> None:
    """The replay flag the logger reads follows the context (replaying, then live)."""
    seen: list[tuple[bool, bool]] = []

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> int:
        a = ctx.step(lambda _: 1, name="a")
        seen.append((ctx.is_replaying(), ctx.logger._is_replaying()))
        b = ctx.step(lambda _: 2, name="b")
        seen.append((ctx.is_replaying(), ctx.logger._is_replaying()))
        raise SuspendExecution(f"come back ({a + b})")

    inv = _input(sqlite_store, {})
    assert handler(inv, None)["Status"] == "PENDING"
    assert seen == [(False, False), (False, False)]
    seen.clear()
    service = DurableService(sqlite_store)
    arn = inv.durable_execution_arn
    # replay: both steps completed, the handler re-runs them from the checkpoint
    event, _ = service.invocation_event(arn)
    inv2 = DurableInvocationInput.from_event(event)
    inv2.store = sqlite_store
    assert handler(inv2, None)["Status"] == "PENDING"
    assert seen == [(True, True), (False, False)]


def test_host_objects_are_frozen_during_an_invocation_and_unfrozen_after(sqlite_store: SQLiteCheckpointStore) -> None:
    frozen_inside: list[int] = []

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> int:
        frozen_inside.append(gc.get_freeze_count())
        return ctx.step(lambda _: 1, name="one")

    host_object = {"a": [1, 2]}
    assert gc.get_freeze_count() == 0
    assert handler(_input(sqlite_store, {}), None)["Status"] == "SUCCEEDED"
    assert frozen_inside[0] > 0  # the host's objects (host_object among them) were out of the collections
    assert gc.get_freeze_count() == 0  # and handed back afterwards: nothing stays frozen
    assert gc.is_tracked(host_object)


def test_a_host_freeze_is_left_alone(sqlite_store: SQLiteCheckpointStore) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> int:
        return ctx.step(lambda _: 1, name="one")

    gc.freeze()
    try:
        before = gc.get_freeze_count()
        assert handler(_input(sqlite_store, {}), None)["Status"] == "SUCCEEDED"
        # the host's own freeze is not undone (a few frozen objects may be freed meanwhile)
        assert gc.get_freeze_count() > before // 2 > 0
    finally:
        gc.unfreeze()


def test_concurrent_invocations_share_one_freeze(sqlite_store: SQLiteCheckpointStore) -> None:
    """The first invocation to finish does not unfreeze under one still running."""
    started = threading.Barrier(2)
    release = threading.Event()
    counts: dict[str, int] = {}

    @durable_execution
    def slow(event: dict, ctx: DurableContext) -> int:
        started.wait(timeout=10)
        release.wait(timeout=10)
        counts["slow_end"] = gc.get_freeze_count()
        return ctx.step(lambda _: 1, name="one")

    inv = _input(sqlite_store, {})
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(out=slow(inv, None)))
    t.start()
    started.wait(timeout=10)

    @durable_execution
    def quick(event: dict, ctx: DurableContext) -> int:
        return ctx.step(lambda _: 2, name="two")

    assert quick(_input(sqlite_store, {}), None)["Status"] == "SUCCEEDED"
    release.set()
    t.join(timeout=10)
    assert result["out"]["Status"] == "SUCCEEDED"
    assert counts["slow_end"] > 0
    assert gc.get_freeze_count() == 0
