"""Deterministic operation ids (same scheme as the AWS SDK)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lambdarun_durable.exceptions import NonDeterministicExecutionError
from lambdarun_durable.lambda_service import OperationType


@dataclass(frozen=True)
class OperationIdNamespace:
    """Maps a context's step counter to ids: ``blake2b(f"{prefix}-{n}")[:64]`` (``str(n)`` at root)."""

    prefix: str | None = None

    def create_id_for_step(self, step: int) -> str:
        step_id = f"{self.prefix}-{step}" if self.prefix else str(step)
        return hashlib.blake2b(step_id.encode()).hexdigest()[:64]


@dataclass(frozen=True)
class OperationIdentifier:
    operation_id: str
    sub_type: str
    parent_id: str | None = None
    name: str | None = None
    operation_type: OperationType = field(kw_only=True)

    @property
    def type(self) -> OperationType:
        return self.operation_type

    def validate_checkpoint(self, checkpoint: Mapping[str, Any] | None) -> None:
        """Raise NonDeterministicExecutionError when the stored operation differs from this one."""
        if checkpoint is None:
            return
        mismatches: list[str] = []
        if checkpoint["Type"] != self.operation_type.value:
            mismatches.append(f"type checkpoint={checkpoint['Type']!r} current={self.operation_type.value!r}")
        if checkpoint.get("SubType") != self.sub_type:
            mismatches.append(f"subtype checkpoint={checkpoint.get('SubType')!r} current={self.sub_type!r}")
        if (checkpoint.get("Name") or None) != (self.name or None):
            mismatches.append(f"name checkpoint={checkpoint.get('Name') or None!r} current={self.name or None!r}")
        if (checkpoint.get("ParentId") or None) != (self.parent_id or None):
            mismatches.append(
                f"parent_id checkpoint={checkpoint.get('ParentId') or None!r} current={self.parent_id or None!r}"
            )
        if mismatches:
            raise NonDeterministicExecutionError(
                f"Non-deterministic operation identity at id={self.operation_id!r} "
                f"(name={self.name!r}): {', '.join(mismatches)}. The handler must issue the same "
                "durable operations in the same order on every replay; start a new execution "
                "after changing its shape.",
                step_id=self.operation_id,
            )
