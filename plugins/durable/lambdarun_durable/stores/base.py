"""What the checkpoint stores share: compact JSON, their typed errors, lease checks.

Each store (:mod:`.sqlite`, :mod:`.dynamodb`, :mod:`.s3`) raises
:class:`~lambdarun.errors.CheckpointConflictError` on a version mismatch,
:class:`~lambdarun.errors.ExecutionNotFoundError` for an unknown execution, and the lease
errors built here.
"""

from __future__ import annotations

import datetime
import json

from lambdarun.errors import (
    CheckpointConflictError,
    CheckpointError,
    ExecutionNotFoundError,
    LeaseHeldError,
    LeaseLostError,
)
from lambdarun.types import Lease

dumps = json.JSONEncoder(separators=(",", ":")).encode
loads = json.loads


def not_found_error(execution_id: str, url: str) -> ExecutionNotFoundError:
    return ExecutionNotFoundError(
        f"No durable execution {execution_id!r} in {url}; check the ARN "
        "(`lambdarun durable list`) and the durable store_url setting."
    )


def conflict_error(execution_id: str, expected: int, actual: int | None) -> CheckpointConflictError:
    return CheckpointConflictError(
        f"Execution {execution_id!r} is at version {actual}, not the expected {expected}: another "
        "writer checkpointed it first. Reload it and retry (the durable engine does this for "
        "service updates and refuses concurrent invocations)."
    )


def iso_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).isoformat(timespec="seconds")


MAX_HOLDER = 256


def check_lease_args(holder: str, ttl: float | None = None) -> None:
    if not isinstance(holder, str) or not holder or len(holder) > MAX_HOLDER:
        raise CheckpointError(
            f"A lease holder id must be a non-empty string of at most {MAX_HOLDER} characters, "
            f"not {str(holder)[:80]!r}"
        )
    if ttl is not None and not (isinstance(ttl, (int, float)) and ttl > 0 and ttl < 86_400):
        raise CheckpointError(f"A lease ttl must be a number of seconds in (0, 86400), not {ttl!r}")


def malformed_lease_error(execution_id: str, where: str) -> CheckpointError:
    return CheckpointError(
        f"The lease of execution {execution_id!r} ({where}) is malformed; if no driver is running it, "
        "delete that lease entry and resume the execution."
    )


def lease_held_error(lease: Lease) -> LeaseHeldError:
    """The typed error a second driver gets: who holds the lease, since when, until when."""
    return LeaseHeldError(
        f"Execution {lease.execution_id!r} is driven by {lease.holder} since {iso_time(lease.acquired_at)} "
        f"(last heartbeat {iso_time(lease.heartbeat_at)}; the lease expires {iso_time(lease.expires_at)} unless "
        "renewed). Only one driver may drive an execution: wait for it (`lambdarun durable resume ARN "
        "--wait SECONDS`, or the durable.lease_wait setting) or follow it with `lambdarun durable describe ARN`.",
        lease=lease,
    )


def lease_lost_error(execution_id: str, holder: str, current: Lease | None) -> LeaseLostError:
    now = f"{current.holder} holds it since {iso_time(current.acquired_at)}" if current else "nobody holds it"
    return LeaseLostError(
        f"The lease on execution {execution_id!r} is no longer held by {holder} ({now}): its heartbeat "
        "stopped for longer than durable.lease_ttl and another driver may have taken over. This driver "
        "stops; `lambdarun durable describe ARN` shows the execution."
    )
