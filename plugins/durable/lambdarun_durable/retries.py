"""Retry strategies (names and formulas of ``aws_durable_execution_sdk_python.retries``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from lambdarun_durable.exceptions import SuspendExecution
from lambdarun_durable.operation_config import ChildConfig, Duration, JitterStrategy, Numeric, RetryDecision

T = TypeVar("T")

_DEFAULT_RETRYABLE_ERROR_PATTERN = re.compile(r".*")


@dataclass
class RetryStrategyConfig:
    max_attempts: int = 3
    initial_delay: Duration = field(default_factory=lambda: Duration.from_seconds(5))
    max_delay: Duration = field(default_factory=lambda: Duration.from_minutes(5))
    backoff_rate: Numeric = 2.0
    jitter_strategy: JitterStrategy = field(default=JitterStrategy.FULL)
    retryable_errors: list[str | re.Pattern] | None = None
    retryable_error_types: list[type[Exception]] | None = None

    @property
    def initial_delay_seconds(self) -> int:
        return self.initial_delay.to_seconds()

    @property
    def max_delay_seconds(self) -> int:
        return self.max_delay.to_seconds()


@dataclass
class LinearRetryStrategyConfig:
    max_attempts: int = 6
    initial_delay: Duration = field(default_factory=lambda: Duration.from_seconds(1))
    increment: Duration = field(default_factory=lambda: Duration.from_seconds(1))
    max_delay: Duration = field(default_factory=lambda: Duration.from_minutes(5))
    jitter_strategy: JitterStrategy = field(default=JitterStrategy.FULL)
    retryable_errors: list[str | re.Pattern] | None = None
    retryable_error_types: list[type[Exception]] | None = None

    @property
    def initial_delay_seconds(self) -> int:
        return self.initial_delay.to_seconds()

    @property
    def increment_seconds(self) -> int:
        return self.increment.to_seconds()

    @property
    def max_delay_seconds(self) -> int:
        return self.max_delay.to_seconds()


def _resolve(
    errors: list[str | re.Pattern] | None, types: list[type[Exception]] | None
) -> tuple[list[str | re.Pattern], list[type[Exception]]]:
    use_default = errors is None and types is None
    resolved = errors if errors is not None else ([_DEFAULT_RETRYABLE_ERROR_PATTERN] if use_default else [])
    return resolved, types or []


def _is_retryable(error: Exception, errors: list[str | re.Pattern], types: list[type[Exception]]) -> bool:
    text = str(error)
    by_message = any(p.search(text) if isinstance(p, re.Pattern) else p in text for p in errors)
    return by_message or any(isinstance(error, t) for t in types)


def create_retry_strategy(
    config: RetryStrategyConfig | None = None,
) -> Callable[[Exception, int], RetryDecision]:
    """Exponential backoff: ``initial * backoff_rate**(attempt-1)`` capped, jittered, >= 1 s."""
    cfg = config or RetryStrategyConfig()
    errors, types = _resolve(cfg.retryable_errors, cfg.retryable_error_types)

    def retry_strategy(error: Exception, attempts_made: int) -> RetryDecision:
        if attempts_made >= cfg.max_attempts or not _is_retryable(error, errors, types):
            return RetryDecision.no_retry()
        base = min(cfg.initial_delay_seconds * (cfg.backoff_rate ** (attempts_made - 1)), cfg.max_delay_seconds)
        return RetryDecision.retry(Duration(seconds=cfg.jitter_strategy.finalize_delay(base)))

    return retry_strategy


def create_linear_retry_strategy(
    config: LinearRetryStrategyConfig | None = None,
) -> Callable[[Exception, int], RetryDecision]:
    cfg = config or LinearRetryStrategyConfig()
    errors, types = _resolve(cfg.retryable_errors, cfg.retryable_error_types)

    def linear_retry_strategy(error: Exception, attempts_made: int) -> RetryDecision:
        if attempts_made >= cfg.max_attempts or not _is_retryable(error, errors, types):
            return RetryDecision.no_retry()
        base = min(cfg.initial_delay_seconds + cfg.increment_seconds * (attempts_made - 1), cfg.max_delay_seconds)
        return RetryDecision.retry(Duration(seconds=cfg.jitter_strategy.finalize_delay(base)))

    return linear_retry_strategy


class RetryPresets:
    @classmethod
    def none(cls) -> Callable[[Exception, int], RetryDecision]:
        return create_retry_strategy(RetryStrategyConfig(max_attempts=1))

    @classmethod
    def default(cls) -> Callable[[Exception, int], RetryDecision]:
        return create_retry_strategy(
            RetryStrategyConfig(
                max_attempts=6,
                initial_delay=Duration.from_seconds(5),
                max_delay=Duration.from_minutes(1),
                backoff_rate=2,
                jitter_strategy=JitterStrategy.FULL,
            )
        )

    @classmethod
    def transient(cls) -> Callable[[Exception, int], RetryDecision]:
        return create_retry_strategy(
            RetryStrategyConfig(max_attempts=3, backoff_rate=2, jitter_strategy=JitterStrategy.HALF)
        )

    @classmethod
    def resource_availability(cls) -> Callable[[Exception, int], RetryDecision]:
        return create_retry_strategy(
            RetryStrategyConfig(
                max_attempts=5,
                initial_delay=Duration.from_seconds(5),
                max_delay=Duration.from_minutes(5),
                backoff_rate=2,
            )
        )

    @classmethod
    def critical(cls) -> Callable[[Exception, int], RetryDecision]:
        return create_retry_strategy(
            RetryStrategyConfig(
                max_attempts=10,
                initial_delay=Duration.from_seconds(1),
                max_delay=Duration.from_minutes(1),
                backoff_rate=1.5,
                jitter_strategy=JitterStrategy.NONE,
            )
        )

    @classmethod
    def linear(cls) -> Callable[[Exception, int], RetryDecision]:
        return create_linear_retry_strategy(
            LinearRetryStrategyConfig(
                max_attempts=6,
                initial_delay=Duration.from_seconds(1),
                increment=Duration.from_seconds(1),
                jitter_strategy=JitterStrategy.NONE,
            )
        )

    @classmethod
    def fixed(cls, interval: Duration | None = None) -> Callable[[Exception, int], RetryDecision]:
        delay = interval if interval is not None else Duration.from_seconds(5)
        return create_retry_strategy(
            RetryStrategyConfig(
                max_attempts=5, initial_delay=delay, max_delay=delay, backoff_rate=1,
                jitter_strategy=JitterStrategy.NONE,
            )
        )


@dataclass(frozen=True)
class WithRetryConfig(Generic[T]):
    retry_strategy: Callable[[Exception, int], RetryDecision] | None = None
    wrap_with_run_in_child_context: bool = True
    child_context_config: ChildConfig[T] | None = None


class RetryingContext(Protocol):
    """What :func:`with_retry` uses of a :class:`~lambdarun_durable.context.DurableContext`."""

    def run_in_child_context(self, func: Callable[[Any], T], name: str | None = None, config: Any = None) -> T: ...

    def wait(self, duration: Duration, name: str | None = None) -> None: ...


def with_retry(
    context: RetryingContext,
    func: Callable[[Any, int], T],
    config: WithRetryConfig[T],
    name: str | None = None,
) -> T:
    """Retry a block of durable logic, waiting durably between attempts."""
    strategy = config.retry_strategy or create_retry_strategy()

    def run_loop(ctx: Any) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return func(ctx, attempt)
            except SuspendExecution:
                raise
            except Exception as err:
                decision = strategy(err, attempt)
                if not decision.should_retry:
                    raise
                ctx.wait(duration=decision.delay, name=f"{name}-backoff-{attempt}" if name else None)

    if config.wrap_with_run_in_child_context:
        return context.run_in_child_context(run_loop, name=name, config=config.child_context_config)
    return run_loop(context)
