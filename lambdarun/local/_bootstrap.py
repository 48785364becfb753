"""Entry point of one local execution environment (run as a script, not imported).

``python .../lambdarun/local/_bootstrap.py module.handler`` with the Lambda environment
variables set. It does what Lambda's sandbox does around the runtime, then hands over to
the real ``awslambdaric`` runtime interface client (its ``__main__.main``), which imports
the handler, reports init errors and loops on ``/2018-06-01/runtime/invocation/next``.

Run as a script so that starting an environment does not import the ``lambdarun``
package (cold starts stay short); this file therefore imports only the stdlib.
"""

import os
import sys
import threading
import time


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


def _watch_parent() -> None:
    """Exit when the local Lambda service that started us is gone (no orphans)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(137)

    threading.Thread(target=watch, name="lambdarun-parent-watch", daemon=True).start()


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
    _set_sys_path()
    _limit_memory()
    _watch_parent()
    from awslambdaric.__main__ import main as ric_main

    ric_main([sys.argv[0], sys.argv[1]])


if __name__ == "__main__":
    main()
