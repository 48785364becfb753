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


def _limit_memory() -> None:
    value = os.environ.pop("_LAMBDARUN_LOCAL_RLIMIT_AS", "")
    if not value:
        return
    try:
        import resource

        limit = int(value)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError, ImportError):  # pragma: no cover - platform specific
        pass


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


def _supervise(runtime: int) -> None:
    """The supervisor's life: wait for the runtime (reaping orphans), then end the tree."""
    parent = os.getppid()

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
    runtime = os.fork()
    if runtime:
        _supervise(runtime)
        return
    # the runtime: dies with its supervisor
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor:
        os._exit(137)
    _set_sys_path()
    _limit_memory()
    from awslambdaric.__main__ import main as ric_main

    ric_main([sys.argv[0], sys.argv[1]])


if __name__ == "__main__":
    main()
