"""Shipping invocation logs to CloudWatch Logs in moto (``ServiceOptions.cloudwatch_logs``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class LogShipper:
    """Ships invocation logs to CloudWatch Logs (moto) from one background thread, in batches."""

    def __init__(self, client_factory: Any) -> None:
        self._client_factory = client_factory
        self._pending: list[tuple[str, str, int, bytes]] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._known: set[tuple[str, str]] = set()
        self._thread = threading.Thread(target=self._loop, name="lambda-log-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, function: str, stream: str, text: bytes) -> None:
        with self._cond:
            self._pending.append((f"/aws/lambda/{function}", stream, int(time.time() * 1000), text))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped and not self._pending:
                    return
            time.sleep(0.1)  # let a burst accumulate into one call per stream
            with self._cond:
                batch, self._pending = self._pending, []
            try:
                self._ship(batch)
            except Exception as e:  # moto gone (shutting down) or a bug: logs stay on disk
                log.debug("could not ship logs to CloudWatch Logs", error=f"{type(e).__name__}: {e}")

    def _ship(self, batch: list[tuple[str, str, int, bytes]]) -> None:
        client = self._client_factory()
        streams: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for group, stream, ts, text in batch:
            events = streams.setdefault((group, stream), [])
            for line in text.decode("utf-8", "replace").splitlines():
                if line:
                    events.append({"timestamp": ts, "message": line})
        for (group, stream), events in streams.items():
            if not events:
                continue
            if (group, stream) not in self._known:
                for call, kwargs in (
                    (client.create_log_group, {"logGroupName": group}),
                    (client.create_log_stream, {"logGroupName": group, "logStreamName": stream}),
                ):
                    try:
                        call(**kwargs)
                    except client.exceptions.ResourceAlreadyExistsException:
                        pass
                self._known.add((group, stream))
            for i in range(0, len(events), 5000):
                client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events[i:i + 5000])
