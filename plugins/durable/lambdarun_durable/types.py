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


class SummaryGenerator(Protocol):
    """``(result) -> str``: the checkpoint payload for results over 256 KiB."""

    def __call__(self, result: Any) -> str: ...


_DURABLE_EXECUTION_ARN_PATTERN = __import__("re").compile(
    r"^arn:[^:]*:lambda:[^:]*:[^:]*:function:([^:/]+):[^:/]+/durable-execution/([^/]+)/([^/]+)$"
)


@dataclass(frozen=True)
class DurableExecutionArn:
    """``arn:...:function:<fn>:<version>/durable-execution/<name>/<invocation id>``, parsed."""

    function_name: str
    execution_name: str
    invocation_id: str

    @classmethod
    def from_arn(cls, arn: str) -> DurableExecutionArn | None:
        m = _DURABLE_EXECUTION_ARN_PATTERN.match(arn)
        return cls(m.group(1), m.group(2), m.group(3)) if m else None
