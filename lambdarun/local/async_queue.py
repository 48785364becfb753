"""Asynchronous (``Event``) invocations: each function's queue and its workers, retries,
``MaximumEventAgeInSeconds``, on-success/on-failure destinations, and keeping queued events
across restarts (through :class:`~lambdarun.local.persist.ServiceState`)."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import structlog

from lambdarun.local.aws_clients import AwsClients
from lambdarun.local.model import AsyncEvent, Function, Invocation, Registry
from lambdarun.local.options import ServiceOptions, now_iso
from lambdarun.local.persist import ServiceState, StoredEvent
from lambdarun.local.records import RecordBook
from lambdarun.local.scheduler import Scheduler
from lambdarun.local.shapes import ApiError, function_name
from lambdarun.private_files import private_dir

log = structlog.get_logger(__name__)


class AsyncQueue:
    """The Event invocations of every function, queued in the service (not in environments)."""

    def __init__(self, options: ServiceOptions, registry: Registry, scheduler: Scheduler,
                 records: RecordBook, clients: AwsClients, state: ServiceState | None) -> None:
        self.options = options
        self.registry = registry
        self.scheduler = scheduler
        self.records = records
        self.clients = clients
        self._state = state
        self._lock = registry.lock
        self._stopping = registry.stopping
        self._timers: set[threading.Timer] = set()
        #: each function's Event invocations on an environment (or waiting for one) now
        self._running: dict[Function, int] = {}

    def stop(self) -> int:
        """Drop what is queued and cancel the retry timers (``stopping`` is set); returns how
        many queued events were dropped (a persistent service keeps them for its next start)."""
        with self._lock:
            timers = list(self._timers)
            dropped = sum(len(f.async_queue) for f in self.registry.functions.values())
            for f in self.registry.functions.values():
                f.async_queue.clear()
            self.registry.capacity.notify_all()  # workers waiting for a slot see ``stopping``
        for t in timers:
            t.cancel()
        return dropped

    def enqueue(self, fn: Function, event: AsyncEvent) -> str:
        if event.record is None:
            event.record = self.records.new(event.request_id, fn.name, "Event", "queued")
        else:
            event.record.status = "queued"
        if self._state is not None and not fn.deleted:
            self.keep_event(fn, event, running=False)  # before 202: accepted means kept
        with self._lock:
            if fn.deleted or self._stopping.is_set():
                return event.request_id
            fn.async_queue.append(event)
            # as Lambda: queued events run in parallel up to the function's concurrency
            # (reserved, else the account's); a worker busy with an event takes no other
            limit = fn.reserved if fn.reserved is not None else self.options.concurrency_limit
            free = fn.async_workers - self._running.get(fn, 0)
            if (free < len(fn.async_queue) and fn.async_workers < limit) or fn.async_workers == 0:
                fn.async_workers += 1
                threading.Thread(
                    target=self._worker, args=(fn,), name=f"async-{fn.name}", daemon=True
                ).start()
        return event.request_id

    def _worker(self, fn: Function) -> None:
        running = False  # this worker holds one of fn's running events
        try:
            while True:
                config = fn.event_invoke_config or {}
                max_age = config.get("MaximumEventAgeInSeconds")
                inv = None
                zero = False
                with self._lock:
                    if running:
                        running = False
                        self._running[fn] -= 1
                    if not fn.async_queue or self._stopping.is_set():
                        return
                    event = fn.async_queue.popleft()
                    if fn.reserved == 0:
                        zero = True
                    elif max_age is None or time.time() - event.received <= max_age:
                        running = True
                        self._running[fn] = self._running.get(fn, 0) + 1
                        event.attempts += 1
                        inv = Invocation(event.payload, event.client_context, fn.timeout,
                                          event.marker, event.record)
                        inv.request_id = event.request_id
                        if inv.marker is not None:  # stop() finds it from here on
                            fn.inflight.add(inv)
                rec = event.record
                if zero:
                    self._zero_reserved(fn, event)
                    continue
                if inv is None:
                    if rec is not None:
                        rec.status, rec.error_type = "failed", "EventAgeExceeded"
                        rec.error_message = f"Event older than MaximumEventAgeInSeconds ({max_age} s)"
                    self.failed(fn, event, None, "EventAgeExceeded")
                    self.forget_events([event.request_id])
                    continue
                if self._state is not None and inv is not None:
                    # from when it has an environment, this attempt counts even if the service dies
                    inv.on_start = lambda fn=fn, event=event: self.keep_event(fn, event, running=True)
                try:
                    self.scheduler.run(fn, inv, wait=True)
                except ApiError as e:
                    if e.status == 429:  # its reserved concurrency became 0 while it waited
                        self._zero_reserved(fn, event)
                        continue
                    # function deleted or service stopping
                    if fn.deleted:
                        self.forget_events([event.request_id])
                    return
                if self._stopping.is_set() and self._state is not None:
                    return  # killed by the stop: kept, retried after the next start
                if inv.cancelled:  # stopped through the extension API: no retry, no destination
                    log.info("async invocation stopped", function=fn.name, request_id=event.request_id)
                    self.forget_events([event.request_id])
                    continue
                if inv.function_error is None:
                    self.forget_events([event.request_id])
                    self._succeeded(fn, event, inv)
                    continue
                retries = config.get("MaximumRetryAttempts", self.options.async_retries)
                if event.attempts <= retries and not fn.deleted:
                    log.info("async invocation failed, retrying", function=fn.name,
                             request_id=event.request_id, attempt=event.attempts)
                    if rec is not None:
                        rec.status = "queued"  # keeps the failed attempt's error until the next
                    self._schedule_retry(fn, event)
                else:
                    self.forget_events([event.request_id])
                    self.failed(fn, event, inv, "RetriesExhausted")
        finally:
            with self._lock:
                if running:
                    self._running[fn] -= 1
                fn.async_workers -= 1
                requeue = bool(fn.async_queue) and fn.async_workers == 0 and not self._stopping.is_set()
                if requeue:  # an event arrived while this worker was leaving
                    fn.async_workers += 1
            if requeue:
                threading.Thread(target=self._worker, args=(fn,), daemon=True).start()

    def _zero_reserved(self, fn: Function, event: AsyncEvent) -> None:
        """A function with reserved concurrency 0 runs no event: Lambda sends each straight
        to the on-failure destination (condition ``ZeroReservedConcurrency``), no retries
        (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html)."""
        rec = event.record
        if rec is not None:
            rec.status, rec.error_type = "throttled", "ZeroReservedConcurrency"
            rec.error_message = "Function not invoked: its reserved concurrency is 0"
        self.forget_events([event.request_id])
        self.failed(fn, event, None, "ZeroReservedConcurrency")

    def _schedule_retry(self, fn: Function, event: AsyncEvent) -> None:
        def fire() -> None:
            with self._lock:  # reentrant: enqueue takes it too
                self._timers.discard(timer)
                if not (event.cancelled or self._stopping.is_set()):
                    # queued before it leaves ``retrying``: the queue never looks drained
                    # between the two (GET /_lambdarun/functions "events")
                    self.enqueue(fn, event)
                fn.retrying.discard(event)

        timer = threading.Timer(self.options.async_retry_delay, fire)
        timer.daemon = True
        with self._lock:
            if self._stopping.is_set():
                return
            self._timers.add(timer)
            fn.retrying.add(event)
        timer.start()

    def _destination_record(self, fn: Function, event: AsyncEvent, inv: Invocation | None,
                            condition: str) -> dict[str, Any]:
        """The record Lambda sends to an on-success / on-failure destination."""
        try:
            request_payload = json.loads(event.payload)
        except ValueError:
            request_payload = event.payload.decode("utf-8", "replace")
        record: dict[str, Any] = {
            "version": "1.0",
            "timestamp": now_iso(),
            "requestContext": {
                "requestId": event.request_id,
                "functionArn": f"{fn.arn}:{fn.version}",
                "condition": condition,
                "approximateInvokeCount": event.attempts,
            },
            "requestPayload": request_payload,
        }
        if inv is not None:
            record["responseContext"] = {"statusCode": 200, "executedVersion": fn.version}
            if inv.function_error:
                record["responseContext"]["functionError"] = inv.function_error
            try:
                record["responsePayload"] = json.loads(inv.result) if inv.result else None
            except ValueError:
                record["responsePayload"] = inv.result.decode("utf-8", "replace")
        return record

    def _succeeded(self, fn: Function, event: AsyncEvent, inv: Invocation) -> None:
        dest = ((fn.event_invoke_config or {}).get("DestinationConfig") or {}).get("OnSuccess") or {}
        if dest.get("Destination"):
            self._send_to_destination(fn, dest["Destination"],
                                      self._destination_record(fn, event, inv, "Success"))

    def failed(self, fn: Function, event: AsyncEvent, inv: Invocation | None,
               condition: str) -> None:
        record = self._destination_record(fn, event, inv, condition)
        log.warning("async invocation failed", function=fn.name, request_id=event.request_id,
                    attempts=event.attempts, condition=condition)
        path = private_dir(self.options.state_dir / "logs" / fn.name) / "async-failures.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        dest = ((fn.event_invoke_config or {}).get("DestinationConfig") or {}).get("OnFailure") or {}
        if dest.get("Destination"):
            self._send_to_destination(fn, dest["Destination"], record)

    def _send_to_destination(self, fn: Function, arn: str, record: dict[str, Any]) -> None:
        """Deliver a destination record: another local function (async) or an SQS queue (moto)."""
        try:
            if ":lambda:" in arn:
                name, _ = function_name(arn)
                target = self.registry.get(name)
                if target is None:
                    raise LookupError(f"destination function {name!r} does not exist")
                self.enqueue(target, AsyncEvent(payload=json.dumps(record).encode()))
            elif ":sqs:" in arn:
                queue_name = arn.rsplit(":", 1)[1]
                sqs = self.clients.get("sqs")
                url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
                sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
            else:
                raise LookupError(f"unsupported destination {arn}")
        except Exception as e:  # a broken destination must not break the queue
            log.warning("could not deliver to the async destination", function=fn.name,
                        destination=arn, error=f"{type(e).__name__}: {e}")

    # -- kept across restarts (see lambdarun.local.persist) ----------------------------

    def keep_event(self, fn: Function, event: AsyncEvent, *, running: bool) -> None:
        assert self._state is not None
        self._state.events.put(StoredEvent(
            function=fn.name, request_id=event.request_id, payload=event.payload,
            client_context=event.client_context, received=event.received,
            attempts=event.attempts, marker=event.marker, running=running,
        ))

    def forget_events(self, request_ids: list[str]) -> None:
        if self._state is not None:
            for request_id in request_ids:
                self._state.events.remove(request_id)


    def restore(self) -> None:
        """Queue the saved Event invocations again. One that was running when the service
        died counts as a failed attempt: retried if attempts remain, else it fails
        (``RetriesExhausted``, on-failure destination) like any other."""
        assert self._state is not None
        requeued = 0
        for stored in self._state.events.load():
            fn = self.registry.get(stored.function)
            if fn is None:
                log.warning("queued event of a function that no longer exists dropped",
                            function=stored.function, request_id=stored.request_id)
                self.forget_events([stored.request_id])
                continue
            event = AsyncEvent(stored.payload, stored.client_context, request_id=stored.request_id,
                                received=stored.received, attempts=stored.attempts,
                                marker=stored.marker)
            retries = (fn.event_invoke_config or {}).get("MaximumRetryAttempts", self.options.async_retries)
            event.record = self.records.new(event.request_id, fn.name, "Event", "queued")
            event.record.attempts = event.attempts  # attempts made before the restart count
            if stored.running and stored.attempts > retries:
                event.record.status = "crashed"
                event.record.error_type = "Runtime.ExitError"
                event.record.error_message = "the local service stopped during its last attempt"
                self.forget_events([event.request_id])
                self.failed(fn, event, None, "RetriesExhausted")
                continue
            self.enqueue(fn, event)
            requeued += 1
        if requeued:
            log.info("queued events restored", count=requeued)
