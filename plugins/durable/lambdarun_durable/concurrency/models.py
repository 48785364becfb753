"""BatchResult and completion policy for map/parallel (AWS SDK names and wire shape)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar, cast

from lambdarun_durable.completion import (
    BatchItemStatus,
    CompletionConfig,
    CompletionDecision,
    CompletionItemStatus,
    CompletionOutcome,
    CompletionStatus,
)
from lambdarun_durable.exceptions import (
    ChildContextError,
    DurableOperationError,
    register_operation_error,
)
from lambdarun_durable.lambda_service import ErrorObject

R = TypeVar("R")


class CompletionReason(Enum):
    ALL_COMPLETED = "ALL_COMPLETED"
    MIN_SUCCESSFUL_REACHED = "MIN_SUCCESSFUL_REACHED"
    FAILURE_TOLERANCE_EXCEEDED = "FAILURE_TOLERANCE_EXCEEDED"
    CUSTOM_COMPLETION_SUCCEEDED = "CUSTOM_COMPLETION_SUCCEEDED"
    CUSTOM_COMPLETION_FAILED = "CUSTOM_COMPLETION_FAILED"


class BatchCompletionError(DurableOperationError):
    """A custom ``should_complete`` completed the batch with a FAILED outcome."""

    _wire_type = "aws_durable_execution_sdk_python.concurrency.models.BatchCompletionError"

    def __init__(
        self,
        completion_reason: CompletionReason = CompletionReason.CUSTOM_COMPLETION_FAILED,
        message: str | None = None,
        error_type: str | None = None,
        data: str | None = None,
        stack_trace: list[str] | None = None,
    ) -> None:
        super().__init__(
            message or f"Batch completed as failed by should_complete ({completion_reason.value})",
            error_type,
            data,
            stack_trace,
        )
        self.completion_reason = completion_reason


register_operation_error(BatchCompletionError)


@dataclass(frozen=True)
class CompletionPolicy:
    total: int
    min_successful: int | None = None
    tolerated_failure_count: int | None = None
    tolerated_failure_percentage: int | float | None = None
    should_complete: Callable[[CompletionStatus], CompletionDecision] | None = None

    @classmethod
    def from_config(cls, total: int, config: CompletionConfig | None) -> CompletionPolicy:
        if config is None:
            return cls(total=total)
        return cls(
            total=total,
            min_successful=config.min_successful,
            tolerated_failure_count=config.tolerated_failure_count,
            tolerated_failure_percentage=config.tolerated_failure_percentage,
            should_complete=config.should_complete,
        )

    @property
    def has_criteria(self) -> bool:
        return (
            self.min_successful is not None
            or self.tolerated_failure_count is not None
            or self.tolerated_failure_percentage is not None
        )

    def is_tolerance_exceeded(self, failed: int) -> bool:
        if self.should_complete is not None:
            return False
        if not self.has_criteria:
            return failed > 0
        if self.tolerated_failure_count is not None and failed > self.tolerated_failure_count:
            return True
        if self.tolerated_failure_percentage is not None and self.total > 0:
            return (failed / self.total) * 100 > self.tolerated_failure_percentage
        return False

    def should_continue(self, failed: int) -> bool:
        return not self.is_tolerance_exceeded(failed)

    def evaluate(
        self, succeeded: int, failed: int, items: tuple[CompletionItemStatus, ...] = ()
    ) -> CompletionDecision | None:
        if self.should_complete is None:
            return None
        return self.should_complete(
            CompletionStatus(
                success_count=succeeded,
                failure_count=failed,
                completed_count=succeeded + failed,
                total_count=self.total,
                items=items,
            )
        )

    def is_complete(
        self,
        succeeded: int,
        failed: int,
        items: tuple[CompletionItemStatus, ...] = (),
        decision: CompletionDecision | None = None,
    ) -> bool:
        if self.should_complete is not None:
            if decision is None:
                decision = self.evaluate(succeeded, failed, items)
            if decision is not None and decision.complete:
                return True
        if succeeded + failed >= self.total:
            return True
        return self.min_successful is not None and succeeded >= self.min_successful

    def reason(
        self,
        succeeded: int,
        failed: int,
        items: tuple[CompletionItemStatus, ...] = (),
        decision: CompletionDecision | None = None,
    ) -> CompletionReason:
        if self.is_tolerance_exceeded(failed):
            return CompletionReason.FAILURE_TOLERANCE_EXCEEDED
        if self.should_complete is not None:
            if decision is None:
                decision = self.evaluate(succeeded, failed, items)
            if decision is not None and decision.complete:
                if decision.outcome is CompletionOutcome.FAILED:
                    return CompletionReason.CUSTOM_COMPLETION_FAILED
                return CompletionReason.CUSTOM_COMPLETION_SUCCEEDED
        if succeeded + failed >= self.total:
            return CompletionReason.ALL_COMPLETED
        if self.min_successful is not None and succeeded >= self.min_successful:
            return CompletionReason.MIN_SUCCESSFUL_REACHED
        return CompletionReason.ALL_COMPLETED


@dataclass(frozen=True)
class BatchItem(Generic[R]):
    index: int
    status: BatchItemStatus
    result: R | None = None
    error: ErrorObject | None = None

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "status": self.status.value,
            "result": self.result,
            "error": self.error.to_dict() if self.error else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BatchItem[R]:
        return cls(
            index=data["index"],
            status=BatchItemStatus(data["status"]),
            result=data.get("result"),
            error=ErrorObject.from_dict(data["error"]) if data.get("error") else None,
        )


@dataclass(frozen=True)
class BatchResult(Generic[R]):
    """Result of ``map``/``parallel``: every started item with its status and result."""

    all: list[BatchItem[R]]
    completion_reason: CompletionReason

    @classmethod
    def from_dict(cls, data: dict, completion_config: CompletionConfig | None = None) -> BatchResult[R]:
        items: list[BatchItem[R]] = [BatchItem.from_dict(item) for item in data["all"]]
        reason = data.get("completionReason")
        if reason is None:
            return cls.from_items(items, completion_config)
        return cls(items, CompletionReason(reason))

    @classmethod
    def from_items(
        cls, items: list[BatchItem[R]], completion_config: CompletionConfig | None = None
    ) -> BatchResult[R]:
        counts: Counter[BatchItemStatus] = Counter(item.status for item in items)
        policy = CompletionPolicy.from_config(len(items), completion_config)
        snapshot = tuple(CompletionItemStatus(index=i.index, status=i.status) for i in items)
        return cls(
            items,
            policy.reason(
                counts.get(BatchItemStatus.SUCCEEDED, 0), counts.get(BatchItemStatus.FAILED, 0), snapshot
            ),
        )

    def to_dict(self) -> dict:
        return {
            "all": [item.to_dict() for item in self.all],
            "completionReason": self.completion_reason.value,
        }

    def succeeded(self) -> list[BatchItem[R]]:
        return [i for i in self.all if i.status is BatchItemStatus.SUCCEEDED]

    def failed(self) -> list[BatchItem[R]]:
        return [i for i in self.all if i.status is BatchItemStatus.FAILED]

    def started(self) -> list[BatchItem[R]]:
        return [i for i in self.all if i.status is BatchItemStatus.STARTED]

    @property
    def status(self) -> BatchItemStatus:
        if self.completion_reason is CompletionReason.CUSTOM_COMPLETION_FAILED:
            return BatchItemStatus.FAILED
        if self.completion_reason is CompletionReason.CUSTOM_COMPLETION_SUCCEEDED:
            return BatchItemStatus.SUCCEEDED
        return BatchItemStatus.FAILED if self.has_failure else BatchItemStatus.SUCCEEDED

    @property
    def has_failure(self) -> bool:
        return any(i.status is BatchItemStatus.FAILED for i in self.all)

    def throw_if_error(self) -> None:
        first = next((i for i in self.all if i.status is BatchItemStatus.FAILED), None)
        if first is not None:
            if first.error is None:
                raise ChildContextError(message=f"Batch item {first.index} failed without an ErrorObject.")
            first.error.raise_as_operation_error(ChildContextError)
        if self.completion_reason is CompletionReason.CUSTOM_COMPLETION_FAILED:
            raise BatchCompletionError(self.completion_reason)

    def get_results(self) -> list[R]:
        return [cast(R, i.result) for i in self.all if i.status is BatchItemStatus.SUCCEEDED]

    def get_errors(self) -> list[ErrorObject | None]:
        return [i.error for i in self.all if i.status is BatchItemStatus.FAILED]

    @property
    def success_count(self) -> int:
        return sum(1 for i in self.all if i.status is BatchItemStatus.SUCCEEDED)

    @property
    def failure_count(self) -> int:
        return sum(1 for i in self.all if i.status is BatchItemStatus.FAILED)

    @property
    def started_count(self) -> int:
        return sum(1 for i in self.all if i.status is BatchItemStatus.STARTED)

    @property
    def total_count(self) -> int:
        return len(self.all)


@dataclass(frozen=True)
class Executable(Generic[R]):
    index: int
    func: Any
    name: str | None = None
