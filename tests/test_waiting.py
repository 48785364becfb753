"""lambdarun.testing.wait_for: poll until a condition holds."""

from __future__ import annotations

import threading

import pytest

from lambdarun.testing import wait_for


def test_returns_the_first_truthy_value_once_another_thread_sets_it():
    box: list[str] = []
    timer = threading.Timer(0.2, box.append, ("ready",))
    timer.start()
    try:
        assert wait_for(lambda: box and box[0], "the box to fill", timeout=30) == "ready"
    finally:
        timer.cancel()


def test_times_out_naming_what_it_waited_for():
    calls = []
    with pytest.raises(AssertionError, match=r"timed out after 0.1 s waiting for the impossible"):
        wait_for(lambda: calls.append(1), "the impossible", timeout=0.1, interval=0.01)
    assert len(calls) >= 2  # it polled, and once more after the deadline passed
