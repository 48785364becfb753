"""Entry point of one local execution environment (run as a script, not imported).

``python .../lambdarun/local/_bootstrap.py module.handler`` with the Lambda environment
variables set. It does what Lambda's sandbox does around the runtime, then hands over to
the real ``awslambdaric`` runtime interface client (its ``__main__.main``), which imports
the handler, reports init errors and loops on ``/2018-06-01/runtime/invocation/next``.

Containment: the process the service starts is the environment's *supervisor*. It makes
itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``) and forks the runtime. Whatever
the handler starts, even a child that calls ``setsid()`` or double-forks to daemonize, stays
a descendant of the supervisor (orphans are re-parented to it, not to init). When the
runtime exits, when the service sends SIGTERM (timeout, stop, eviction, shutdown) or when
the service itself is gone, the supervisor SIGKILLs every descendant, reaps them, and exits
with the runtime's status (so the service sees ``signal: killed`` or ``exit status N``).
(cgroup v2 would be the alternative; it is not writable on the machines we target.)

Run as a script so that starting an environment does not import the ``lambdarun``
package (cold starts stay short); this file therefore imports only the stdlib.
"""

import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


#: while the runtime tree takes page faults, the next sample of its memory comes when it
#: could have used its remaining headroom at this rate (bytes/s, about a memset's here), but
#: within these bounds (seconds); while it takes none (e.g. blocked on the Runtime API's
#: /next: its memory cannot grow), every :data:`_MEMORY_IDLE_INTERVAL` seconds
_MEMORY_FILL_RATE = 4 * 1024**3
_MEMORY_MIN_INTERVAL = 0.002
_MEMORY_MAX_INTERVAL = 0.05
_MEMORY_IDLE_INTERVAL = 0.5
#: seconds the active rate is kept after the last page fault (a process that forked is
#: followed while its children start)
_MEMORY_ACTIVE_HOLD = 0.25
#: the service sends this signal to the supervisor when it gives the environment an
#: invocation: the watchdog then samples at once, at the active rate
WAKE_SIGNAL = signal.SIGUSR1
_wake = threading.Event()


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from the children files of their threads (cheap: no
    scan of /proc)."""
    out = [root]
    for pid in out:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    out.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                pass
    return out


def _sample(pids: list[int], page: int) -> tuple[int, int]:
    """(resident bytes, page faults) of ``pids`` together, from /proc/<pid>/stat."""
    rss = faults = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            faults += int(fields[7]) + int(fields[9])
            rss += int(fields[21]) * page
        except (OSError, IndexError, ValueError):
            pass
    return rss, faults


def _watch_memory(runtime: int, limit: int, path: str) -> None:
    """The environment's memory limit: sample the resident memory of the runtime and every
    process it started (the supervisor's descendants: orphans are re-parented to it); past
    ``limit`` SIGKILL them all (as the kernel's OOM kill in Lambda's sandbox). ``path`` (0600) holds ``"<peak bytes> <1 if killed>"`` for the service: the
    REPORT line's Max Memory Used, and Runtime.OutOfMemory for the invocation.

    While the tree takes page faults (resident memory only grows through them, and a fork
    takes some) and for 0.25 s after, sampled as often as its headroom requires (the time
    to fill it at 4 GB/s, 2-50 ms); every 0.5 s while it takes none, and at once when
    the service hands the environment an invocation (:data:`WAKE_SIGNAL`); a fast allocator gets past the limit by what it
    allocates in one interval before the kill (see the benchmarks' memory row)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    page = os.sysconf("SC_PAGE_SIZE")
    me = os.getpid()
    peak, last_faults, stale, active_until = 0, -1, 0, 0.0
    pids = [runtime]
    while True:
        now = time.monotonic()
        active = now < active_until
        # the supervisor's descendants (orphans are re-parented to it): re-read every 4th
        # sample while active, at every idle one
        if stale <= 0 or not active:
            pids, stale = _tree(me)[1:], 4
        stale -= 1
        rss, faults = _sample(pids, page)
        if rss > peak:
            peak = rss
            os.pwrite(fd, b"%020d 0\n" % peak, 0)
        if rss > limit:
            os.pwrite(fd, b"%020d 1\n" % peak, 0)
            for pid in _tree(me)[1:]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return
        if _runtime_gone:
            return
        woken = _wake.is_set()
        _wake.clear()
        if faults != last_faults or woken:
            if not active:
                stale = 0  # it may have forked
            active_until = now + _MEMORY_ACTIVE_HOLD
        last_faults = faults
        if now < active_until:
            time.sleep(min(_MEMORY_MAX_INTERVAL, max(_MEMORY_MIN_INTERVAL, (limit - rss) / _MEMORY_FILL_RATE)))
        else:
            _wake.wait(_MEMORY_IDLE_INTERVAL)


_runtime_gone = False


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


def _descendants(root: int) -> list[int]:
    """Live (non-zombie) descendants of ``root``, from ``/proc``."""
    children: dict[int, list[tuple[int, bytes]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append((int(entry), fields[0]))
    out: list[int] = []
    todo = [root]
    while todo:
        for pid, state in children.get(todo.pop(), ()):
            todo.append(pid)
            if state != b"Z":
                out.append(pid)
    return out


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _end_tree(deadline: float = 5.0) -> None:
    """SIGKILL every descendant (re-parented orphans included) until none is left."""
    me = os.getpid()
    give_up = time.monotonic() + deadline
    while True:
        pids = _descendants(me)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()
        if not pids or time.monotonic() > give_up:
            break
        time.sleep(0.002)
    _reap()


def _supervise(runtime: int, memory: str) -> None:
    """The supervisor's life: wait for the runtime (reaping orphans), then end the tree."""
    global _runtime_gone
    parent = os.getppid()
    if memory:
        limit, _, path = memory.partition(":")
        threading.Thread(target=_watch_memory, args=(runtime, int(limit), path),
                         name="lambdarun-memory", daemon=True).start()

    def end_runtime(*_: object) -> None:
        try:
            os.kill(runtime, signal.SIGKILL)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, end_runtime)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:  # the service is gone (killed): no environment outlives it
        while os.getppid() == parent:
            time.sleep(0.5)
        end_runtime()

    threading.Thread(target=watch, name="lambdarun-parent-watch", daemon=True).start()
    status = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == runtime:
            break
    _runtime_gone = True
    _end_tree()
    if os.WIFSIGNALED(status):  # end the same way, so the service reports that signal
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP: no handler to reset
            pass
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), signal.SIGKILL)  # a signal whose default is not to terminate
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _set_sys_path() -> None:
    first = os.environ.pop("_LAMBDARUN_LOCAL_SYS_PATH", None)
    if first is not None:
        # a zip function, run with -I -S: sys.path is only the stdlib (no script directory
        # under -I), so put the task root, the function's PYTHONPATH and the runtime's
        # packages in front of it, like Lambda's /var/task and /var/runtime
        sys.path[0:0] = [p for p in first.split(os.pathsep) if p]
        return
    # A script's own directory is sys.path[0]; Lambda puts the task root there instead.
    sys.path[0] = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()


def main() -> None:
    supervisor = os.getpid()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    memory = os.environ.pop("_LAMBDARUN_LOCAL_MEMORY", "")  # "<limit bytes>:<file>"
    # before the runtime exists: the service signals only environments whose runtime asked
    # for an invocation already, so this handler is in place by then
    signal.signal(WAKE_SIGNAL, lambda *_: _wake.set())
    runtime = os.fork()
    if runtime:
        _supervise(runtime, memory)
        return
    # the runtime: dies with its supervisor
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(WAKE_SIGNAL, signal.SIG_DFL)  # the handler's to use
    if os.getppid() != supervisor:
        os._exit(137)
    _set_sys_path()
    from awslambdaric.__main__ import main as ric_main

    ric_main([sys.argv[0], sys.argv[1]])


if __name__ == "__main__":
    main()
