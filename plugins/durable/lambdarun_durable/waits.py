"""Wait strategies for ``wait_for_condition`` (names of ``aws_durable_execution_sdk_python.waits``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from lambdarun_durable.exceptions import WaitForConditionError
from lambdarun_durable.operation_config import Duration, JitterStrategy

if TYPE_CHECKING:
    from lambdarun_durable.serdes import SerDes

T = TypeVar("T")
Numeric = int | float


@dataclass
class WaitStrategyConfig(Generic[T]):
    should_continue_polling: Callable[[T], bool]
    max_attempts: int = 60
    initial_delay: Duration = field(default_factory=lambda: Duration.from_seconds(5))
    max_delay: Duration = field(default_factory=lambda: Duration.from_minutes(5))
    backoff_rate: Numeric = 1.5
    jitter_strategy: JitterStrategy = field(default=JitterStrategy.FULL)

    @property
    def initial_delay_seconds(self) -> int:
        return self.initial_delay.to_seconds()

    @property
    def max_delay_seconds(self) -> int:
        return self.max_delay.to_seconds()


@dataclass(frozen=True)
class WaitForConditionDecision:
    should_continue: bool
    delay: Duration

    @property
    def delay_seconds(self) -> int:
        return self.delay.to_seconds()

    @classmethod
    def continue_waiting(cls, delay: Duration) -> WaitForConditionDecision:
        return cls(should_continue=True, delay=delay)

    @classmethod
    def stop_polling(cls) -> WaitForConditionDecision:
        return cls(should_continue=False, delay=Duration())


def create_wait_strategy(config: WaitStrategyConfig[T]) -> Callable[[T, int], WaitForConditionDecision]:
    def wait_strategy(result: T, attempts_made: int) -> WaitForConditionDecision:
        if not config.should_continue_polling(result):
            return WaitForConditionDecision.stop_polling()
        if attempts_made >= config.max_attempts:
            raise WaitForConditionError(
                f"wait_for_condition exhausted {config.max_attempts} attempts before the condition was met"
            )
        base = min(config.initial_delay_seconds * (config.backoff_rate ** (attempts_made - 1)), config.max_delay_seconds)
        delay = max(1, math.ceil(config.jitter_strategy.apply_jitter(base)))
        return WaitForConditionDecision.continue_waiting(Duration(seconds=delay))

    return wait_strategy


@dataclass(frozen=True)
class WaitForConditionConfig(Generic[T]):
    wait_strategy: Callable[[T, int], WaitForConditionDecision]
    initial_state: T
    serdes: SerDes | None = None
