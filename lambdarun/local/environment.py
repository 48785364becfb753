"""One execution environment (a worker process, its Runtime API endpoint and its log file),
and the process environment a function's workers get.

The scheduling of environments (slots, warm reuse, reaping) is :mod:`.scheduler`'s; an
:class:`Environment` reports to it through the small :class:`EnvironmentHost` protocol.
"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from lambdarun.local import auth
from lambdarun.local._http import LoopbackServer
from lambdarun.local._sandbox import ISOLATED_FLAGS, SYS_PATH_VAR
from lambdarun.local.model import Function, Invocation
from lambdarun.local.options import INIT_PHASE_LIMIT, KILL_GRACE, LOCAL_ENDPOINTS_VAR, ServiceOptions
from lambdarun.local.runtime_api import RuntimeHandler
from lambdarun.private_files import private_dir

_BOOTSTRAP = str(Path(__file__).with_name("_bootstrap.py"))
#: seconds after its last invocation from which an environment's memory watchdog may have
#: gone idle (it stays active 0.25 s after the last page fault, see _bootstrap.py), so that
#: the next invocation wakes it
WATCHDOG_IDLE_AFTER = 0.2


class EnvironmentHost(Protocol):
    """What an environment needs from whoever schedules it."""

    options: ServiceOptions
    stopping: threading.Event

    def function_environment(self, fn: Function, env: Environment) -> dict[str, str]: ...

    def environment_died(self, env: Environment) -> None: ...


class Environment:
    """One execution environment: a worker process and its Runtime API endpoint."""

    def __init__(self, host: EnvironmentHost, fn: Function) -> None:
        self.host = host
        self.function = fn
        self.generation = fn.generation
        self.id = uuid.uuid4().hex
        self.inbox: collections.deque[Invocation] = collections.deque()
        self.inbox_ready = threading.Condition(threading.Lock())
        self.current: Invocation | None = None
        self.initialized = threading.Event()
        self.init_error: bytes | None = None
        self.init_duration_ms: float | None = None
        self.init_reported = False
        #: (perf_counter, time) when the first invocation began, when this environment runs
        #: its Init inside it (after an Init phase past Lambda's 10 s, see the scheduler)
        self.init_in_invoke: tuple[float, float] | None = None
        self.dead = False
        self.exit_reason: str | None = None
        self.last_used = time.monotonic()
        day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
        self.log_stream = f"{day}/[{fn.version}]{self.id}"
        log_dir = private_dir(host.options.state_dir / "logs" / fn.name)
        self.log_path = log_dir / f"{day.replace('/', '-')}-{self.id}.log"
        #: the supervisor's memory watchdog writes the tree's peak resident bytes here
        self.memory_path = self.log_path.with_suffix(".mem")
        #: killed by its memory limit (the invocation then fails with Runtime.OutOfMemory)
        self.out_of_memory = False
        # 0600 from the start: logs hold the function's output, tracebacks, payloads
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.log_file = open(fd, "ab", buffering=0)  # noqa: SIM115 - closed by the service
        self.in_use = False
        self.runtime = LoopbackServer(RuntimeHandler, self, name=f"runtime-{fn.name}")
        self.proc: subprocess.Popen[bytes] | None = None
        #: set once spawn() has recorded the process (or failed): the Runtime API can be
        #: asked before that, when the spawning thread gets the GIL back late (under load)
        self._spawned = threading.Event()
        self._runtime_pid: int | None = None
        #: pidfd of the supervisor, to wake its memory watchdog (None: no memory limit)
        self._pidfd: int | None = None
        self.spawned_at = 0.0
        self.started_at = time.time()
        self.invocations = 0

    # -- process ---------------------------------------------------------------------

    def spawn(self) -> None:
        fn = self.function
        opts = self.host.options
        env = self.host.function_environment(fn, self)
        self.runtime.start()
        self.spawned_at = time.perf_counter()
        if fn.local_code:  # a directory used in place: this environment's packages too
            argv = [fn.python or opts.python, _BOOTSTRAP, fn.handler]
        elif fn.python:  # another interpreter (its Runtime's): with its own packages
            argv = [fn.python, "-I", "-u", "-B", _BOOTSTRAP, fn.handler]
        else:  # a zip: only its content and what Lambda's runtime provides
            argv = [opts.python, *ISOLATED_FLAGS, _BOOTSTRAP, fn.handler]
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=str(fn.code_dir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.log_file,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,
            )
        finally:
            self._spawned.set()
        if opts.memory_limit and hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.proc.pid)
            except OSError:  # pragma: no cover - kernel without pidfds
                pass
        threading.Thread(target=self._monitor, name=f"env-monitor-{fn.name}", daemon=True).start()
        if self.dead or self.host.stopping.is_set():  # killed or stopped while spawning
            self.kill(self.exit_reason or "service stopped")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _monitor(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        # whatever the handler started in the environment's process group goes with it
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        reason = self.exit_reason or (
            f"signal: {signal.Signals(-code).name.lower().removeprefix('sig')}"
            if code < 0
            else f"exit status {code}"
        )
        if code < 0 and -code == signal.SIGKILL and not self.exit_reason:
            reason = "signal: killed"
        self.out_of_memory = read_peak(self.memory_path)[1]
        if self.out_of_memory:
            reason = "signal: killed"
        with self.inbox_ready:  # from here on submit() refuses new invocations
            self.dead = True
            pending = list(self.inbox)
            self.inbox.clear()
        self.initialized.set()
        inv = self.current if self.in_use else None
        for victim in ([inv] if inv else []) + pending:
            if victim.done.is_set():
                continue
            if self.init_error is not None:
                victim.finish(self.init_error, "Unhandled")
            else:
                # AWS: an environment killed past its memory fails with Runtime.OutOfMemory
                # (https://docs.aws.amazon.com/lambda/latest/dg/troubleshooting-invocation.html)
                error = "Runtime.OutOfMemory" if self.out_of_memory else "Runtime.ExitError"
                message = f"RequestId: {victim.request_id} Error: Runtime exited with error: {reason}"
                self.write_log(f"{message}\n{error}\n")
                victim.fail(error, message)
        with self.inbox_ready:
            self.inbox_ready.notify_all()
            pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)
        self.runtime.close()
        self.host.environment_died(self)

    def kill(self, reason: str | None = None) -> None:
        """Kill the worker and everything it started, ``setsid()`` children included.

        SIGKILL to the runtime and SIGTERM to the environment's supervisor (see
        ``_bootstrap.py``: a child subreaper that SIGKILLs every descendant, then exits with
        the runtime's status); should it not be gone
        within :data:`KILL_GRACE` seconds, SIGKILL to its whole process group."""
        if reason and not self.exit_reason:
            self.exit_reason = reason
        self.dead = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            runtime = self.runtime_pid()
            # the runtime at once (it may be burning CPU the next environment needs), then
            # the supervisor, which sweeps whatever else the handler started
            for pid, sig in ((runtime, signal.SIGKILL), (proc.pid, signal.SIGTERM)):
                if pid:
                    try:
                        os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass

            def force() -> None:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass

            timer = threading.Timer(KILL_GRACE, force)
            timer.daemon = True
            timer.start()
        with self.inbox_ready:
            self.inbox_ready.notify_all()

    def close_log(self) -> None:
        self.log_file.close()
        self.memory_path.unlink(missing_ok=True)

    # -- invocations -----------------------------------------------------------------

    def submit(self, inv: Invocation) -> None:
        with self.inbox_ready:
            if not (self.dead and self.proc is not None and self.proc.returncode is not None):
                self.inbox.append(inv)
                self.inbox_ready.notify()
                if (self._pidfd is not None and self.initialized.is_set()
                        and time.monotonic() - self.last_used > WATCHDOG_IDLE_AFTER):
                    # the memory watchdog, gone idle, samples at once (_bootstrap.WAKE_SIGNAL):
                    # only once the runtime has asked for an invocation is its handler surely
                    # in place; a pidfd (closed under this lock) never signals a reused pid
                    try:
                        signal.pidfd_send_signal(self._pidfd, signal.SIGUSR1)
                    except OSError:
                        pass
                return
        # the worker exited between being picked and being given the event
        inv.fail("Runtime.ExitError",
                 f"RequestId: {inv.request_id} Error: Runtime exited with error: {self.exit_reason or 'exited'}")

    def next_invocation(self) -> Invocation | None:
        """Block until an invocation is queued for this environment (Runtime API /next)."""
        if not self.initialized.is_set():
            self.init_duration_ms = (time.perf_counter() - self.spawned_at) * 1000
            self.initialized.set()
        with self.inbox_ready:
            while True:
                while not self.inbox and not self.dead:
                    self.inbox_ready.wait()
                if self.dead:
                    return None
                inv = self.inbox.popleft()
                if not inv.done.is_set():  # else stopped before the runtime asked for it
                    break
        self.invocations += 1
        self.current = inv
        inv.log_start = self.log_size()
        self.write_log(f"START RequestId: {inv.request_id} Version: {self.function.version}\n")
        inv.started_at = time.perf_counter()
        inv.deadline_ms = int(time.time() * 1000) + inv.timeout * 1000
        if self.init_in_invoke is not None and self.invocations == 1:
            # its Init ran inside this invocation: the duration and deadline count from
            # when the invocation began
            inv.started_at = self.init_in_invoke[0]
            inv.deadline_ms = int(self.init_in_invoke[1] * 1000) + inv.timeout * 1000
        inv.started.set()
        return inv

    def write_log(self, text: str) -> None:
        try:
            self.log_file.write(text.encode("utf-8", "replace"))
        except (OSError, ValueError):
            pass

    def log_size(self) -> int:
        try:
            return os.fstat(self.log_file.fileno()).st_size
        except (OSError, ValueError):
            return 0

    def log_since(self, offset: int) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def is_runtime_connection(self, conn: Any) -> bool:
        """True when ``conn`` (accepted on this environment's Runtime API) comes from this
        environment's runtime process."""
        # its runtime may ask before spawn() has recorded the process: wait for that (a
        # bounded wait: Lambda's Init phase limit); a connection from elsewhere is refused
        # after it as before
        self._spawned.wait(INIT_PHASE_LIMIT)
        pid = self.runtime_pid()
        if pid is None:
            return False
        held = auth.peer_held_by(conn, pid)
        return True if held is None else held  # None: no /proc here, nothing to check with

    def runtime_pid(self) -> int | None:
        """Pid of the runtime (the supervisor's first child), found once."""
        if self._runtime_pid is None and self.pid:
            try:
                with open(f"/proc/{self.pid}/task/{self.pid}/children", "rb") as f:
                    first = f.read().split()[:1]
                self._runtime_pid = int(first[0]) if first else None
            except (OSError, ValueError):
                pass
        return self._runtime_pid

    def max_memory_mb(self) -> int:
        """Peak resident memory of the environment so far (MB): the larger of the memory
        watchdog's sampled peak of the whole process tree and the kernel's high-water mark
        (VmHWM) of the runtime process."""
        peak = read_peak(self.memory_path)[0]
        try:
            with open(f"/proc/{self.runtime_pid() or self.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
                        break
        except (OSError, ValueError, IndexError):
            pass
        return math.ceil(peak / (1024 * 1024))


def function_environment(fn: Function, env: Environment, options: ServiceOptions, api_url: str,
                         runtime_dir: Path | None) -> dict[str, str]:
    """The process environment of ``fn``'s worker in ``env``: what Lambda sets, the stack's
    credentials and endpoints, then the function's own variables. ``runtime_dir`` (see
    :mod:`._sandbox`) is required for zip functions."""
    opts = options
    base = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT", "LD_LIBRARY_PATH", "VIRTUAL_ENV")
    }
    pythonpath = [str(fn.code_dir)]
    user = dict(fn.environment)
    if user.get("PYTHONPATH"):
        pythonpath.append(user.pop("PYTHONPATH"))
    out = {
        **base,
        "LANG": "en_US.UTF-8",  # Lambda's, whatever the service's own is
        "TZ": ":UTC",
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        # the stack's own credentials, as Lambda injects the role's: a local function
        # never sees the user's real ones, and they are all the local stack accepts
        **opts.credentials.environment(),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_REGION": opts.region,
        "AWS_DEFAULT_REGION": opts.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": fn.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": fn.version,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": env.log_stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_RUNTIME_API": env.runtime.address,
        "LAMBDA_TASK_ROOT": str(fn.code_dir),
        "LAMBDA_RUNTIME_DIR": str(Path(_BOOTSTRAP).parent),
        "_HANDLER": fn.handler,
        "AWS_ENDPOINT_URL_LAMBDA": api_url,
    }
    for service, url in opts.service_endpoints.items():
        key = f"AWS_ENDPOINT_URL_{service.upper()}" if service else "AWS_ENDPOINT_URL"
        out[key] = url
    # lets lambdarun's own `local` target inside the function attach to this stack
    # instead of starting another one (see lambdarun.local.plugin)
    out[LOCAL_ENDPOINTS_VAR] = json.dumps({
        "lambda": api_url,
        "moto": opts.service_endpoints.get("") or opts.service_endpoints.get("S3", ""),
        "region": opts.region,
    })
    out.update(user)
    if not fn.local_code and runtime_dir is not None:
        # -I ignores PYTHONPATH: _bootstrap.py builds sys.path from this instead
        out[SYS_PATH_VAR] = os.pathsep.join([*pythonpath, str(runtime_dir)])
    if opts.memory_limit:  # read (and removed) by the supervisor, see _bootstrap.py
        out[MEMORY_VAR] = f"{fn.memory_size * 1024 * 1024}:{env.memory_path}"
    return out


#: tells the environment's supervisor its memory limit and where to write the peak
MEMORY_VAR = "_LAMBDARUN_LOCAL_MEMORY"


def read_peak(path: Path) -> tuple[int, bool]:
    """(peak resident bytes, killed past the limit) from an environment's memory file."""
    try:
        with open(path, "rb") as f:
            peak, flag = f.read(64).split()[:2]
        return int(peak), flag == b"1"
    except (OSError, ValueError):
        return 0, False
