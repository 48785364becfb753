"""Context objects passed to user functions (names of ``aws_durable_execution_sdk_python.types``)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    # the SDK imports these from its config module; here they live in operation_config
    # (config.py is the plugin's settings too, which the engine must not depend on)
    from lambdarun_durable.operation_config import (
        CallbackConfig,
        ChildConfig,
        Duration,
        MapConfig,
        ParallelBranch,
        ParallelConfig,
        StepConfig,
    )

T = TypeVar("T")
U = TypeVar("U")
C_co = TypeVar("C_co", covariant=True)
C_contra = TypeVar("C_contra", contravariant=True)


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


# The SDK's protocols (ported from aws-durable-execution-sdk-python 3.0.0 types.py,
# Apache-2.0): what a DurableContext, a Callback and a BatchResult offer, for type hints.
# lambdarun_durable.DurableContext / BatchResult are the concrete classes.

class Callback(Protocol, Generic[C_co]):
    """Protocol for callback futures."""

    callback_id: str

    @abstractmethod
    def result(self) -> C_co | None:
        """Return the result of the future. Will block until result is available."""
        ...  # pragma: no cover


class BatchResult(Protocol, Generic[T]):
    """Protocol for batch operation results."""

    @abstractmethod
    def get_results(self) -> list[T]:
        """Get all successful results."""
        ...  # pragma: no cover


class DurableContext(Protocol):
    """Protocol defining the interface for durable execution contexts."""

    @abstractmethod
    def step(
        self,
        func: Callable[[StepContext], T],
        name: str | None = None,
        config: StepConfig | None = None,
    ) -> T:
        """Execute a step durably."""
        ...  # pragma: no cover

    @abstractmethod
    def run_in_child_context(
        self,
        func: Callable[[DurableContext], T],
        name: str | None = None,
        config: ChildConfig | None = None,
    ) -> T:
        """Run callable in a child context."""
        ...  # pragma: no cover

    @abstractmethod
    def map(
        self,
        inputs: Sequence[U],
        func: Callable[[DurableContext, U, int, Sequence[U]], T],
        name: str | None = None,
        config: MapConfig | None = None,
    ) -> BatchResult[T]:
        """Apply function durably to each item in inputs."""
        ...  # pragma: no cover

    @abstractmethod
    def parallel(
        self,
        functions: Sequence[Callable[[DurableContext], T] | ParallelBranch[T]],
        name: str | None = None,
        config: ParallelConfig | None = None,
    ) -> BatchResult[T]:
        """Execute callables durably in parallel."""
        ...  # pragma: no cover

    @abstractmethod
    def wait(self, duration: Duration, name: str | None = None) -> None:
        """Wait for a specified amount of time."""
        ...  # pragma: no cover

    @abstractmethod
    def create_callback(
        self, name: str | None = None, config: CallbackConfig | None = None
    ) -> Callback:
        """Create a callback."""
        ...  # pragma: no cover



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
