"""The AWS durable SDK's per-operation configuration types (``Duration``, ``StepConfig``,
``CallbackConfig``, ``MapConfig``, ...), with the names and fields of
``aws_durable_execution_sdk_python.config``; users import them from
:mod:`lambdarun_durable.config`, which re-exports them.

These are frozen dataclasses (not attrs) on purpose: they must accept exactly the
positional and keyword arguments the AWS SDK's classes accept.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from lambdarun_durable.completion import CompletionConfig
from lambdarun_durable.exceptions import ValidationError

if TYPE_CHECKING:
    from lambdarun_durable.serdes import SerDes

P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")

Numeric = int | float


@dataclass(frozen=True)
class Duration:
    """A duration stored as whole seconds."""

    seconds: int = 0

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValidationError("Duration seconds must be positive")

    def to_seconds(self) -> int:
        return self.seconds

    @classmethod
    def from_seconds(cls, value: float) -> Duration:
        return cls(seconds=int(value))

    @classmethod
    def from_minutes(cls, value: float) -> Duration:
        return cls(seconds=int(value * 60))

    @classmethod
    def from_hours(cls, value: float) -> Duration:
        return cls(seconds=int(value * 3600))

    @classmethod
    def from_days(cls, value: float) -> Duration:
        return cls(seconds=int(value * 86400))


@dataclass
class RetryDecision:
    """What a retry strategy decided (``aws_durable_execution_sdk_python.retries.RetryDecision``)."""

    should_retry: bool
    delay: Duration

    @property
    def delay_seconds(self) -> int:
        return self.delay.to_seconds()

    @classmethod
    def retry(cls, delay: Duration) -> RetryDecision:
        return cls(should_retry=True, delay=delay)

    @classmethod
    def no_retry(cls) -> RetryDecision:
        return cls(should_retry=False, delay=Duration())


class NestingType(Enum):
    """NESTED: one CONTEXT operation per branch; FLAT: virtual branch contexts."""

    NESTED = "NESTED"
    FLAT = "FLAT"


@dataclass(frozen=True)
class ParallelConfig:
    max_concurrency: int | None = None
    completion_config: CompletionConfig = field(default_factory=CompletionConfig.all_successful)
    serdes: SerDes | None = None
    item_serdes: SerDes | None = None
    summary_generator: Callable[[Any], str] | None = None
    nesting_type: NestingType = NestingType.NESTED

    def __post_init__(self) -> None:
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValidationError(f"max_concurrency must be at least 1, got: {self.max_concurrency}")


@dataclass(frozen=True)
class ParallelBranch(Generic[T]):
    """A named branch for ``context.parallel``."""

    func: Callable
    name: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


class StepSemantics(Enum):
    AT_MOST_ONCE_PER_RETRY = "AT_MOST_ONCE_PER_RETRY"
    AT_LEAST_ONCE_PER_RETRY = "AT_LEAST_ONCE_PER_RETRY"


_SUB_TYPE_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_")
_SUB_TYPE_MAX_LENGTH = 32


def _validate_sub_type(sub_type: str | None) -> None:
    if not sub_type:
        return
    if len(sub_type) > _SUB_TYPE_MAX_LENGTH or not set(sub_type) <= _SUB_TYPE_CHARACTERS:
        raise ValidationError(
            f"sub_type must be 1 to {_SUB_TYPE_MAX_LENGTH} characters from "
            f"A-Z, a-z, 0-9, hyphen, and underscore, got: {sub_type!r}"
        )


@dataclass(frozen=True)
class StepConfig:
    """Retry strategy, at-least-once / at-most-once per retry, serdes, subtype."""

    retry_strategy: Callable[[Exception, int], RetryDecision] | None = None
    step_semantics: StepSemantics = StepSemantics.AT_LEAST_ONCE_PER_RETRY
    serdes: SerDes | None = None
    sub_type: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        _validate_sub_type(self.sub_type)


@dataclass(frozen=True)
class ChildConfig(Generic[T]):
    serdes: SerDes | None = None
    sub_type: str | None = None
    summary_generator: Callable[[Any], str] | None = None
    is_virtual: bool = False

    def __post_init__(self) -> None:
        _validate_sub_type(self.sub_type)


@dataclass(frozen=True)
class MapConfig(Generic[T]):
    max_concurrency: int | None = None
    completion_config: CompletionConfig = field(default_factory=CompletionConfig)
    serdes: SerDes | None = None
    item_serdes: SerDes | None = None
    summary_generator: Callable[[Any], str] | None = None
    nesting_type: NestingType = NestingType.NESTED
    item_namer: Callable[[T, int], str] | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValidationError(f"max_concurrency must be at least 1, got: {self.max_concurrency}")


@dataclass(frozen=True)
class InvokeConfig(Generic[P, R]):
    serdes_payload: SerDes[P] | None = None
    serdes_result: SerDes[R] | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class CallbackConfig:
    """Callback timeout and heartbeat timeout (zero means none) and result serdes."""

    timeout: Duration = field(default_factory=Duration)
    heartbeat_timeout: Duration = field(default_factory=Duration)
    serdes: SerDes | None = None
    sub_type: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        _validate_sub_type(self.sub_type)

    @property
    def timeout_seconds(self) -> int:
        return self.timeout.to_seconds()

    @property
    def heartbeat_timeout_seconds(self) -> int:
        return self.heartbeat_timeout.to_seconds()


@dataclass(frozen=True)
class WaitForCallbackConfig(CallbackConfig):
    retry_strategy: Callable[[Exception, int], RetryDecision] | None = None


class JitterStrategy(StrEnum):
    NONE = "NONE"
    FULL = "FULL"
    HALF = "HALF"

    def apply_jitter(self, delay: float) -> float:
        match self:
            case JitterStrategy.NONE:
                return delay
            case JitterStrategy.HALF:
                return delay / 2 + random.random() * (delay / 2)  # noqa: S311
            case _:
                return random.random() * delay  # noqa: S311

    def finalize_delay(self, base_delay: float) -> int:
        return max(1, math.ceil(self.apply_jitter(base_delay)))
