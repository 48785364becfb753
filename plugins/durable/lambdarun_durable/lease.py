"""One driver per durable execution: the orchestrator's lease in the checkpoint store.

A driver (the process running :class:`~lambdarun_durable.service.Orchestrator`) takes the
execution's lease before it invokes anything, renews it from a heartbeat thread every
``heartbeat`` seconds (``heartbeat`` ≪ ``ttl``) and releases it at the end. A second driver
waits for the lease up to ``wait`` seconds, then raises
:class:`~lambdarun.errors.LeaseHeldError` naming the holder and since when. A lease whose
holder died stops being renewed and expires after ``ttl``; then another driver takes over.
If this driver's own heartbeat cannot renew the lease (it stalled past ``ttl`` and someone
else took over), :meth:`DriverLease.check` raises :class:`~lambdarun.errors.LeaseLostError`
and the orchestrator stops before its next invocation.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from typing import Any

import attrs
import structlog

from lambdarun.errors import CheckpointError, LeaseHeldError, LeaseLostError
from lambdarun.types import Lease

from lambdarun_durable.stores.base import lease_lost_error

log = structlog.get_logger(__name__)


def _positive(_inst: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 seconds, not {value!r}")


@attrs.frozen
class LeasePolicy:
    """How a driver holds an execution's lease (the ``durable.lease_*`` settings)."""

    #: seconds a lease lives without a heartbeat; a dead driver's lease frees after this
    ttl: float = attrs.field(default=30.0, validator=_positive)
    #: seconds between heartbeats; must be well under ``ttl`` (at most ttl / 3)
    heartbeat: float = attrs.field(default=5.0, validator=_positive)
    #: seconds a second driver waits for a held lease before LeaseHeldError (0: do not wait)
    wait: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    #: seconds between attempts while waiting
    poll: float = attrs.field(default=0.5, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.heartbeat * 3 > self.ttl * (1 + 1e-9):
            raise ValueError(
                f"durable.lease_heartbeat ({self.heartbeat} s) must be at most a third of "
                f"durable.lease_ttl ({self.ttl} s), so one slow heartbeat never loses the lease"
            )


def new_holder_id() -> str:
    """``host/pid/random``: unique per driver, readable in the error a second driver gets."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


class DriverLease:
    """The lease on one execution, held by one driver while it drives; a context manager."""

    def __init__(self, store: Any, execution_id: str, policy: LeasePolicy, holder: str | None = None) -> None:
        self.store = store
        self.execution_id = execution_id
        self.policy = policy
        self.holder = holder or new_holder_id()
        self.lease: Lease | None = None
        self.waited = 0.0
        self._lost: LeaseLostError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquire / release
    def acquire(self) -> Lease:
        """Take the lease, waiting up to ``policy.wait`` seconds; LeaseHeldError after that."""
        if not callable(getattr(self.store, "acquire_lease", None)):
            raise CheckpointError(
                f"The checkpoint store {getattr(self.store, 'url', self.store)!r} has no lease methods "
                "(acquire_lease, renew_lease, release_lease, get_lease: see lambdarun.types.CheckpointStore); "
                "update the plugin that provides it, so one driver at a time drives an execution."
            )
        start = time.monotonic()
        deadline = start + self.policy.wait
        holder_seen: str | None = None
        while True:
            try:
                self.lease = self.store.acquire_lease(self.execution_id, self.holder, self.policy.ttl)
                break
            except LeaseHeldError as held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                if holder_seen != held.lease.holder:  # once per holder, not once per poll
                    holder_seen = held.lease.holder
                    log.info(
                        "durable.lease.waiting", arn=self.execution_id, holder=held.lease.holder,
                        expires_at=held.lease.expires_at, wait=self.policy.wait,
                    )
                time.sleep(min(self.policy.poll, remaining))
        self.waited = time.monotonic() - start
        log.debug("durable.lease.acquired", arn=self.execution_id, holder=self.holder, waited=self.waited)
        self._thread = threading.Thread(target=self._beat, name="durable-lease-heartbeat", daemon=True)
        self._thread.start()
        return self.lease

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.policy.heartbeat + 10)
        if self.lease is not None and self._lost is None:
            try:
                self.store.release_lease(self.execution_id, self.holder)
            except Exception:  # noqa: BLE001 - it expires by itself after ttl
                log.warning("durable.lease.release_failed", arn=self.execution_id, exc_info=True)
        self.lease = None

    def __enter__(self) -> DriverLease:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- heartbeat
    def _beat(self) -> None:
        while not self._stop.wait(self.policy.heartbeat):
            try:
                self.lease = self.store.renew_lease(self.execution_id, self.holder, self.policy.ttl)
            except LeaseLostError as e:
                self._lost = e
                log.error("durable.lease.lost", arn=self.execution_id, holder=self.holder, error=str(e))
                return
            except Exception:  # noqa: BLE001 - a transient store error: the next beat retries
                log.warning("durable.lease.heartbeat_failed", arn=self.execution_id, exc_info=True)

    def check(self) -> None:
        """Raise LeaseLostError when this driver may no longer drive (call before invoking)."""
        if self._lost is not None:
            raise self._lost
        lease = self.lease
        if lease is not None and lease.expired(time.time()):
            # the heartbeat could not renew it in time: someone may take it any moment
            try:
                self.lease = self.store.renew_lease(self.execution_id, self.holder, self.policy.ttl)
            except LeaseLostError as e:
                self._lost = e
                raise
        elif lease is None:
            raise lease_lost_error(self.execution_id, self.holder, None)


__all__ = ["DriverLease", "LeasePolicy", "new_holder_id"]
