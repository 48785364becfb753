"""Scheduling invocations onto execution environments: concurrency slots (reserved and
global), warm reuse (most recently used first), eviction, idle reaping, and running one
invocation to completion (init and task timeouts, the REPORT line).

Throttling and memory limits land here; an environment itself is :mod:`.environment`'s.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import structlog

from lambdarun.local._sandbox import build_runtime_dir
from lambdarun.local.environment import Environment, function_environment
from lambdarun.local.log_shipping import LogShipper
from lambdarun.local.model import Function, Invocation, Registry
from lambdarun.local.options import INIT_TIMEOUT, ServiceOptions, now_iso
from lambdarun.local.report import record_outcome, write_report
from lambdarun.local.shapes import ApiError
from lambdarun.local.throttle import RESERVED_LIMIT, Throttle

log = structlog.get_logger(__name__)


class Scheduler:
    """The execution environments of every function, and the slots they run in."""

    def __init__(self, options: ServiceOptions, registry: Registry) -> None:
        self.options = options
        self.registry = registry
        self.stopping = registry.stopping
        self._lock = registry.lock
        self._capacity = registry.capacity
        self._environments: set[Environment] = set()
        #: each function's idle (warm) environments, most recently used last
        self._idle: dict[Function, list[Environment]] = {}
        self._busy_total = 0
        self.throttle = Throttle(options.concurrency_limit, options.scaling_rate)
        self._runtime_dir: Path | None = None
        self._reaper: threading.Thread | None = None
        #: the Lambda API's URL (``AWS_ENDPOINT_URL_LAMBDA`` of every function)
        self.api_url = ""
        #: ships REPORTed log lines to CloudWatch Logs when set
        self.shipper: LogShipper | None = None

    def start(self) -> None:
        """Start reaping idle environments (set :attr:`api_url` first)."""
        self._reaper = threading.Thread(target=self._reap_loop, name="lambda-reaper", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        """Kill every environment; waits until their processes are gone (``stopping`` is set)."""
        with self._lock:
            envs = list(self._environments)
            self._capacity.notify_all()
        for env in envs:
            env.kill("service stopped")
        for env in envs:
            if env.proc is not None:
                try:
                    env.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    pass
            env.runtime.close()
            env.close_log()

    def runtime_dir(self) -> Path:
        """This service's directory of the packages Lambda's runtime provides (zip functions
        see only these besides their own code and the stdlib; see :mod:`._sandbox`)."""
        with self._lock:
            if self._runtime_dir is None:
                self._runtime_dir = build_runtime_dir(self.options.state_dir / "runtime")
            return self._runtime_dir

    def environment_pids(self) -> list[int]:
        with self._lock:
            return [e.pid for e in self._environments if e.pid and not e.dead]

    def live_environments(self) -> list[Environment]:
        with self._lock:
            return [e for e in self._environments if not e.dead]

    def retire(self, fn: Function, reason: str) -> None:
        """Kill ``fn``'s idle environments (after a change, or its deletion): its next
        invocations get fresh ones."""
        with self._lock:
            idle = self._idle.pop(fn, [])
        for env in idle:
            env.kill(reason)

    def function_environment(self, fn: Function, env: Environment) -> dict[str, str]:
        return function_environment(fn, env, self.options, self.api_url,
                                    None if fn.local_code or fn.python else self.runtime_dir())

    def _throttle_reason(self, fn: Function) -> str | None:
        warm = any(not e.dead and e.generation == fn.generation for e in self._idle.get(fn, ()))
        return self.throttle.reason(fn, self.registry.functions.values(), self._busy_total,
                                    new_environment=not warm)

    def _acquire(self, fn: Function, *, wait: bool) -> Environment:
        """Reserve a slot and an environment (warm if one is idle, else a new one)."""
        evict: list[Environment] = []
        with self._capacity:
            while True:
                if self.stopping.is_set() or fn.deleted:
                    raise ApiError(409, "ResourceConflictException", "The function is being deleted or the service is stopping.")
                reason = self._throttle_reason(fn)
                if reason is None:
                    break
                if not wait or (reason == RESERVED_LIMIT and fn.reserved == 0):
                    raise ApiError(429, "TooManyRequestsException", "Rate Exceeded.", Reason=reason)
                self._capacity.wait(1.0)
            fn.busy += 1
            self._busy_total += 1
            env = None
            idle = self._idle.get(fn) or []
            while idle:
                candidate = idle.pop()  # most recently used first, like Lambda
                if not candidate.dead and candidate.generation == fn.generation:
                    env = candidate
                    env.in_use = True
                    break
                evict.append(candidate)
            if env is None:
                live = sum(1 for e in self._environments if not e.dead) - len(evict)
                if live >= self.options.concurrency_limit:
                    oldest = self._oldest_idle()
                    if oldest is not None:
                        self._idle[oldest.function].remove(oldest)
                        evict.append(oldest)
        for e in evict:
            e.kill("evicted")
        if env is None:
            try:
                env = Environment(self, fn)
                env.in_use = True
                with self._lock:
                    self._environments.add(env)
                env.spawn()
            except Exception:
                self._release_slot(fn)
                raise
        return env

    def _oldest_idle(self) -> Environment | None:
        idle = [e for envs in self._idle.values() for e in envs if not e.dead]
        return min(idle, key=lambda e: e.last_used) if idle else None

    def _release_slot(self, fn: Function) -> None:
        with self._capacity:
            fn.busy -= 1
            self._busy_total -= 1
            self._capacity.notify_all()

    def _release(self, fn: Function, env: Environment) -> None:
        retire = False
        with self._capacity:
            fn.busy -= 1
            self._busy_total -= 1
            env.current = None
            env.in_use = False
            env.last_used = time.monotonic()
            if env.dead:
                if env.proc is None or env.proc.returncode is not None:
                    env.close_log()
            elif fn.deleted or env.generation != fn.generation or self.stopping.is_set():
                retire = True
            else:
                self._idle.setdefault(fn, []).append(env)
            self._capacity.notify_all()
        if retire:
            env.kill("retired")

    def environment_died(self, env: Environment) -> None:
        with self._lock:
            self._environments.discard(env)
            idle = self._idle.get(env.function)
            if idle is not None and env in idle:
                idle.remove(env)
            if not env.in_use:
                env.close_log()

    def _reap_loop(self) -> None:
        idle_timeout = self.options.idle_timeout
        interval = max(0.05, min(1.0, idle_timeout / 4))
        while not self.stopping.wait(interval):
            cutoff = time.monotonic() - idle_timeout
            victims = []
            with self._lock:
                for idle in self._idle.values():
                    for env in list(idle):
                        if env.last_used < cutoff:
                            idle.remove(env)
                            victims.append(env)
            for env in victims:
                env.kill("idle")

    def run(self, fn: Function, inv: Invocation, *, wait: bool) -> tuple[Environment | None, bool]:
        """Run ``inv`` to completion on an environment of ``fn``; returns (env, cold).

        env is None when ``inv`` was stopped before it got one."""
        if inv.marker is not None:
            with self._lock:
                fn.inflight.add(inv)
        try:
            if inv.done.is_set():  # stopped before it started
                record_outcome(inv)
                return None, False
            env = self._acquire(fn, wait=wait)
        except BaseException:
            self._forget(fn, inv)
            raise
        if inv.on_start is not None:
            inv.on_start()
        cold = not env.initialized.is_set()
        rec = inv.record
        if rec is not None and rec.status != "running":  # an Event leaving the queue
            rec.status, rec.started_at = "running", time.time()
            rec.attempts += 1
        try:
            inv.env = env  # before the check below: stop() kills it from now on
            if not inv.done.is_set():
                env.submit(inv)
            if not inv.started.wait(INIT_TIMEOUT) and cold and not inv.done.is_set():
                env = self._init_in_invoke(fn, env, inv)
            if not inv.started.is_set():
                env.kill("init timeout")
                inv.fail(
                    "Runtime.ExitError",
                    f"RequestId: {inv.request_id} Error: Init timed out after {INIT_TIMEOUT:.2f} seconds",
                )
            if not inv.done.wait(fn.timeout):
                # the deadline counts from when the runtime took the event
                remaining = inv.started_at + fn.timeout - time.perf_counter()
                if remaining > 0:
                    inv.done.wait(remaining)
            if not inv.done.is_set():
                message = f"RequestId: {inv.request_id} Error: Task timed out after {fn.timeout:.2f} seconds"
                if inv.fail("Sandbox.Timedout", message):
                    env.write_log(
                        f"{now_iso()} {inv.request_id} Task timed out after {fn.timeout:.2f} seconds\n"
                    )
                    env.kill("timeout")
            write_report(env, inv, cold, self.shipper)
        finally:
            self._forget(fn, inv)
            self._release(fn, env)
        return env, cold

    def _init_in_invoke(self, fn: Function, env: Environment, inv: Invocation) -> Environment:
        """``env``'s Init phase passed Lambda's 10 s: as Lambda does, end it and run Init
        again inside this (its first) invocation, in a fresh environment, under the
        function's timeout; the invocation's duration includes the re-init and its REPORT
        has no ``Init Duration``. Returns the environment now holding ``inv``.

        https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html ("Init
        phase": "If all three tasks don't complete within 10 seconds, Lambda retries the Init
        phase at the time of the first function invocation with the configured function
        timeout"); the INIT_REPORT lines are as on that page ("Failures during the Init phase")."""
        with env.inbox_ready:
            if inv not in env.inbox:  # the runtime took it just now: the init did finish
                return env
            env.inbox.remove(inv)
        env.write_log(f"INIT_REPORT Init Duration: {INIT_TIMEOUT * 1000:.2f} ms\tPhase: init\tStatus: timeout\n")
        with self._lock:
            env.in_use = False
        env.kill("init timeout")
        invoke_start = time.perf_counter()
        fresh = Environment(self, fn)
        fresh.in_use = True
        fresh.init_in_invoke = (invoke_start, time.time())
        fresh.init_reported = True  # the init is part of the invocation's duration
        with self._lock:
            self._environments.add(fresh)
        inv.env = fresh
        try:
            fresh.spawn()
        except OSError as e:
            inv.fail("Runtime.ExitError", f"RequestId: {inv.request_id} Error: Runtime exited with error: {e}")
            return fresh
        fresh.submit(inv)
        if not inv.started.wait(fn.timeout) and not inv.done.is_set():
            elapsed = (time.perf_counter() - invoke_start) * 1000
            fresh.write_log(f"INIT_REPORT Init Duration: {elapsed:.2f} ms\tPhase: invoke\tStatus: timeout\n")
            inv.log_start = inv.log_start or fresh.log_size()
            fresh.write_log(f"START RequestId: {inv.request_id} Version: {fn.version}\n")
            inv.started_at = invoke_start
            message = f"RequestId: {inv.request_id} Error: Task timed out after {fn.timeout:.2f} seconds"
            if inv.fail("Sandbox.Timedout", message):
                fresh.write_log(f"{now_iso()} {inv.request_id} Task timed out after {fn.timeout:.2f} seconds\n")
                fresh.kill("timeout")
        return fresh

    def _forget(self, fn: Function, inv: Invocation) -> None:
        if inv.marker is not None:
            with self._lock:
                fn.inflight.discard(inv)
