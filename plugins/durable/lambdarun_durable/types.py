"""Context objects passed to user functions (names of ``aws_durable_execution_sdk_python.types``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class LoggerInterface(Protocol):
    def debug(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None: ...
    def info(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None: ...
    def warning(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None: ...
    def error(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None: ...
    def exception(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None: ...


@dataclass(frozen=True)
class OperationContext:
    logger: LoggerInterface


@dataclass(frozen=True)
class StepContext(OperationContext):
    """Passed to step functions; ``attempt`` starts at 1."""

    attempt: int


@dataclass(frozen=True)
class WaitForCallbackContext(OperationContext):
    """Passed to wait_for_callback submitters."""


@dataclass(frozen=True)
class WaitForConditionCheckContext(OperationContext):
    attempt: int


class LambdaContext(Protocol):
    aws_request_id: str

    def get_remaining_time_in_millis(self) -> int: ...
