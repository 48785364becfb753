"""The embedded local stack in a child process (``[local] out_of_process = true``).

The caller's process then runs none of the servers: the Lambda service and moto answer in a
child with its own GIL, and the caller reaches them over loopback like any attached client.

* The child is ``python -m lambdarun.local.child``. Its settings come on its stdin (one JSON
  line), and it answers on its stdout with one JSON line, the ready signal, carrying the
  endpoints, the stack's private credentials and its signing key: nothing secret is on the
  command line or in the environment, and the pipes are private to the two processes.
* It dies with the caller: it keeps reading its stdin, which reaches end-of-file when the
  caller exits or is killed (SIGKILL included: the kernel closes the caller's end), and also
  checks that its parent is still the caller; then it stops the stack (its execution
  environments included) and exits.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from lambdarun.errors import TargetError
from lambdarun.local.credentials import StackCredentials
from lambdarun.local.stack import LocalStack
from lambdarun.local.stack_info import Endpoints, StackInfo

__all__ = ["ChildStack", "READY_TIMEOUT"]

log = structlog.get_logger(__name__)

#: seconds the caller waits for the child's ready signal
READY_TIMEOUT = 120.0

_SETTINGS = ("port", "moto_port", "region", "max_concurrency", "idle_timeout", "async_retries",
             "async_retry_delay", "memory_limit", "cloudwatch_logs")


class ChildStack(LocalStack):
    """A :class:`~lambdarun.local.stack.LocalStack` whose servers run in a child process;
    this process is attached to it (``owned`` is False, ``pid`` is the child's)."""

    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildStack:
        with self._lock:
            if self._endpoints is not None:
                return self
            settings = {name: getattr(self, name) for name in _SETTINGS}
            settings["state_dir"] = str(self.state_dir)
            process = subprocess.Popen(
                [sys.executable, "-m", "lambdarun.local.child"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            try:
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(json.dumps(settings).encode() + b"\n")
                process.stdin.flush()
                ready = _read_line(process, READY_TIMEOUT)
                doc = json.loads(ready)
            except BaseException as exc:
                process.kill()
                process.wait()
                if isinstance(exc, TargetError):
                    raise
                raise TargetError(
                    f"the local stack's child process did not start ({type(exc).__name__}: {exc}); "
                    "see its messages above, or set [local] out_of_process = false"
                ) from exc
            self._process = process
            endpoints = Endpoints(lambda_=doc["lambda"], moto=doc["moto"])
            self._attached = StackInfo(pid=process.pid, endpoints=endpoints, region=doc["region"],
                                       state_dir="", started=time.time())
            self._endpoints = endpoints
            self._credentials = StackCredentials(doc["access_key_id"], doc["secret_access_key"])
            self._signing_key = base64.b64decode(doc["signing_key"])
            self._run_dir = Path(doc["run_dir"])
            self.region = doc["region"]
            log.debug("local stack started in a child process", pid=process.pid, lambda_=endpoints.lambda_)
            return self

    @property
    def signing_key(self) -> bytes | None:
        return self._signing_key

    def stop(self) -> None:
        """Stop the child's stack (its environments too) and wait for it to exit."""
        super().stop()  # forgets the endpoints and credentials
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()  # end-of-file: the child stops its stack and exits
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    fd = process.stdout.fileno()
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TargetError(f"the local stack's child process sent no ready signal within {timeout:g} s")
        readable, _, _ = select.select([fd], [], [], min(left, 1.0))
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise TargetError(
                    f"the local stack's child process exited (status {process.poll()}) before it was ready"
                )
            data += chunk
    return data


# ---------------------------------------------------------------------------------------
# the child
# ---------------------------------------------------------------------------------------


def main() -> None:
    parent = os.getppid()
    settings: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    from lambdarun.logs import configure_logging

    configure_logging(os.environ.get("LAMBDARUN_LOG_LEVEL", "WARNING"))
    stack = LocalStack(settings.pop("state_dir"), reuse=False, stop_at_exit=False, **settings).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        finally:
            done.set()  # end-of-file: the caller exited or was killed

    threading.Thread(target=watch_stdin, name="lambdarun-child-watch", daemon=True).start()
    credentials = stack.credentials
    ready = {
        "lambda": stack.endpoints.lambda_,
        "moto": stack.endpoints.moto,
        "region": stack.region,
        "access_key_id": credentials.access_key_id,
        "secret_access_key": credentials.secret_access_key,
        "signing_key": base64.b64encode(stack.signing_key or b"").decode("ascii"),
        "run_dir": str(stack.run_dir),
    }
    os.write(sys.stdout.fileno(), json.dumps(ready).encode() + b"\n")
    try:
        while not done.wait(1.0):
            if os.getppid() != parent:  # re-parented: the caller is gone
                break
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
