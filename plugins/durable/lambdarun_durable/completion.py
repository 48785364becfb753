"""When a ``map``/``parallel`` batch completes: the completion types of
``aws_durable_execution_sdk_python.config`` (re-exported there as ``lambdarun_durable.config``).

Frozen dataclasses, as in the AWS SDK (they accept exactly its arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from lambdarun_durable.exceptions import ValidationError


class BatchItemStatus(Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STARTED = "STARTED"


class CompletionOutcome(Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class CompletionDecision:
    complete: bool
    outcome: CompletionOutcome | None = None

    def __post_init__(self) -> None:
        if self.complete and self.outcome is None:
            raise ValidationError("outcome is required when complete is True")
        if not self.complete and self.outcome is not None:
            raise ValidationError("outcome must be None when complete is False")


def continue_batch() -> CompletionDecision:
    """Do not complete the batch yet."""
    return CompletionDecision(complete=False)


def complete_batch(outcome: CompletionOutcome = CompletionOutcome.SUCCEEDED) -> CompletionDecision:
    """Complete the batch now with ``outcome``."""
    return CompletionDecision(complete=True, outcome=outcome)


@dataclass(frozen=True)
class CompletionItemStatus:
    index: int
    name: str | None = None
    status: BatchItemStatus | None = None


@dataclass(frozen=True)
class CompletionStatus:
    success_count: int
    failure_count: int
    completed_count: int
    total_count: int
    items: tuple[CompletionItemStatus, ...] = ()


@dataclass(frozen=True)
class CompletionConfig:
    """When a map/parallel completes: min successes, tolerated failures, or a predicate.

    With no criterion at all the batch fails fast on the first failure.
    """

    min_successful: int | None = None
    tolerated_failure_count: int | None = None
    tolerated_failure_percentage: int | float | None = None
    should_complete: Callable[[CompletionStatus], CompletionDecision] | None = None

    def __post_init__(self) -> None:
        if self.min_successful is not None and self.min_successful < 1:
            raise ValidationError(f"min_successful must be at least 1, got: {self.min_successful}")
        if self.tolerated_failure_count is not None and self.tolerated_failure_count < 0:
            raise ValidationError(
                f"tolerated_failure_count must be non-negative, got: {self.tolerated_failure_count}"
            )
        if self.tolerated_failure_percentage is not None and not (
            0 <= self.tolerated_failure_percentage <= 100
        ):
            raise ValidationError(
                "tolerated_failure_percentage must be between 0 and 100, got: "
                f"{self.tolerated_failure_percentage}"
            )
        if self.should_complete is not None and not callable(self.should_complete):
            raise ValidationError("should_complete must be callable")
        if self.should_complete is not None and (
            self.min_successful is not None
            or self.tolerated_failure_count is not None
            or self.tolerated_failure_percentage is not None
        ):
            raise ValidationError(
                "should_complete cannot be combined with min_successful, "
                "tolerated_failure_count, or tolerated_failure_percentage"
            )

    def validate_for_total(self, total: int) -> None:
        """Refuse a ``min_successful`` larger than the batch (``total`` items)."""
        if self.min_successful is not None and self.min_successful > total:
            raise ValidationError(
                f"min_successful cannot be greater than total items: {self.min_successful} > {total}"
            )

    @staticmethod
    def first_successful() -> CompletionConfig:
        return CompletionConfig(min_successful=1)

    @staticmethod
    def all_completed() -> CompletionConfig:
        return CompletionConfig(tolerated_failure_percentage=100)

    @staticmethod
    def all_successful() -> CompletionConfig:
        return CompletionConfig(tolerated_failure_count=0, tolerated_failure_percentage=0)
