"""Shared fixtures of the local target tests: one private stack for the whole session."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lambdarun.local import LocalStack
from lambdarun.local.testing import create_function, local_stack_fixture

# short async retry delay so retry tests take well under a second
local_stack = local_stack_fixture(scope="session", async_retry_delay=0.1, max_concurrency=8,
                                  cloudwatch_logs=True)

_names = itertools.count()


@pytest.fixture(scope="session")
def lam(local_stack: LocalStack) -> Any:
    """A Lambda client that does not retry, so 429s and 5xx reach the test."""
    return local_stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=60)


@pytest.fixture
def make_function(lam: Any) -> Iterator[Callable[..., str]]:
    """``make_function(source, **kwargs) -> name``: create a uniquely named function from
    the text of ``app.py``; every function is deleted (its workers killed) afterwards."""
    created: list[str] = []

    def make(source: str | dict[str, str], **kwargs: Any) -> str:
        name = f"fn-{next(_names)}"
        create_function(lam, name, source, **kwargs)
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            lam.delete_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass
