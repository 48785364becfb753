"""The local stack: the local Lambda service plus moto's server (S3, DynamoDB, IAM, ...).

Embedded (the default): ``LocalStack(state_dir).start()`` runs both servers in background
threads of the calling process and stops them at exit. Shared: ``lambdarun local up`` runs
one in the foreground and records ``<state_dir>/stack.json`` (pid + endpoints); any
``LocalStack(state_dir, reuse=True)`` then attaches to it instead of starting its own.

A shared stack keeps its functions, queued Event invocations and moto's data in
``<state_dir>/shared/state/`` and the next one restores them (:mod:`.persist`); an attached
stack follows a restarted one (:meth:`LocalStack.refresh`) or reports
:class:`LocalStackUnavailableError`.

What describes a stack from outside (endpoints, ``stack.json``, a live one) is :mod:`.stack_info`'s,
moto's server :mod:`.moto_server`'s (imported by :meth:`LocalStack.start` only); re-exported here.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.errors import TargetError
from lambdarun.limits import ACCOUNT_CONCURRENCY, SCALING_RATE
from lambdarun.local import auth
from lambdarun.local.auth import CREDENTIALS_FILE, StackCredentials
from lambdarun.local.options import LOCAL_ENDPOINTS_VAR, ServiceOptions
from lambdarun.local.signing_key import SIGNING_KEY_FILE, kept_signing_key, new_signing_key
from lambdarun.local.stack_info import (
    MOTO_SERVICES, SHARED_DIR, STATE_FILE, Endpoints, LocalStackUnavailableError, StackInfo,
    default_state_dir, health, pid_running, read_stack_info, shared_credentials,
)
from lambdarun.private_files import private_dir, write_private
from lambdarun.session import at_exit_after_sessions

if TYPE_CHECKING:
    from lambdarun.local.persist import MotoJournal, ServiceState
    from lambdarun.local.service import LambdaService

__all__ = [
    "Endpoints",
    "LocalStack",
    "LocalStackUnavailableError",
    "NoDelayQuietHandler",
    "StackInfo",
    "default_state_dir",
    "pid_running",
    "read_stack_info",
    "shared_credentials",
]

log = structlog.get_logger(__name__)


def __getattr__(name: str) -> Any:  # the servers' modules: imported by start() (see there)
    if name == "NoDelayQuietHandler":
        from lambdarun.local.moto_server import NoDelayQuietHandler
        return NoDelayQuietHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LocalStack:
    """The local Lambda service and moto's server, started together.

    :param state_dir: directory for ``stack.json``, extracted code and logs
        (default :func:`default_state_dir`).
    :param port: Lambda API port (0: free port).
    :param moto_port: moto server port (0: free port).
    :param region: region in ARNs and in the functions' ``AWS_REGION``.
    :param max_concurrency: the account's concurrent executions (0: AWS's 1,000).
    :param scaling_rate: new environments per function per 10 s (AWS: 1,000).
    :param idle_timeout: seconds before an idle environment is reaped.
    :param async_retries: retries of a failed ``Event`` invocation (Lambda: 2).
    :param async_retry_delay: seconds between those retries.
    :param memory_limit: enforce ``MemorySize`` (killed past it: ``Runtime.OutOfMemory``).
    :param cloudwatch_logs: also ship invocation logs to CloudWatch Logs in moto.
    :param reuse: attach to the shared stack recorded in ``state_dir`` when one is up.
    :param shared: record this stack in ``stack.json`` for other processes (``local up``).
    :param stop_at_exit: stop at interpreter exit (embedded mode).
    :param persist: keep functions, queued Event invocations and moto's state in
        ``<state_dir>/shared/state/`` and restore them on the next start (default: on for
        shared stacks; embedded ones never persist).

    Embedded stacks (``shared=False``) keep code and logs in
    ``<state_dir>/embedded-<pid>-<id>/``, removed when they stop; shared ones in
    ``<state_dir>/shared/``.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        moto_port: int = 0,
        region: str = "us-east-1",
        max_concurrency: int = 0,
        scaling_rate: int = SCALING_RATE,
        idle_timeout: float = 300.0,
        async_retries: int = 2,
        async_retry_delay: float = 1.0,
        memory_limit: bool = True,
        cloudwatch_logs: bool = False,
        reuse: bool = True,
        shared: bool = False,
        stop_at_exit: bool = True,
        persist: bool | None = None,
    ) -> None:
        self.state_dir = Path(state_dir or default_state_dir()).expanduser().resolve()
        self.port = port
        self.moto_port = moto_port
        self.region = region
        self.max_concurrency = max_concurrency
        self.scaling_rate = scaling_rate
        self.idle_timeout = idle_timeout
        self.async_retries = async_retries
        self.async_retry_delay = async_retry_delay
        self.memory_limit = memory_limit
        self.cloudwatch_logs = cloudwatch_logs
        self.reuse = reuse
        self.shared = shared
        self.stop_at_exit = stop_at_exit
        #: keep functions, queued Events and moto's state across restarts (shared stacks)
        self.persist = shared if persist is None else persist and shared
        self._journal: MotoJournal | None = None
        self._state: ServiceState | None = None
        self._lock = threading.RLock()
        self._service: LambdaService | None = None
        self._moto: Any = None
        self._endpoints: Endpoints | None = None
        self._attached: StackInfo | None = None
        self._run_dir: Path | None = None
        self._clients: dict[str, Any] = {}
        self._signing_key: bytes | None = None
        self._credentials: StackCredentials | None = None
        self._forget_at_exit: Callable[[], None] | None = None

    @classmethod
    def attached(cls, endpoints: Endpoints, region: str = "us-east-1", *,
                 credentials: StackCredentials) -> LocalStack:
        """A stack object for endpoints served elsewhere (nothing to start or stop)."""
        stack = cls(reuse=False, region=region, stop_at_exit=False)
        stack._attached = StackInfo(pid=0, endpoints=endpoints, region=region, state_dir="", started=0.0)
        stack._endpoints = endpoints
        stack._credentials = credentials
        return stack

    @classmethod
    def from_function_environment(cls, environ: Mapping[str, str] | None = None) -> LocalStack | None:
        """Inside a function run by the local service: the stack that runs it (with the
        credentials the service injected), else None."""
        env = os.environ if environ is None else environ
        raw = env.get(LOCAL_ENDPOINTS_VAR)
        credentials = StackCredentials.from_environment(env)
        if not raw or credentials is None:
            return None
        doc = json.loads(raw)
        return cls.attached(Endpoints(lambda_=doc["lambda"], moto=doc["moto"]),
                            doc.get("region", "us-east-1"), credentials=credentials)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start (or attach to a running shared stack); returns ``self``. Idempotent."""
        with self._lock:
            if self._endpoints is not None:
                return self
            private_dir(self.state_dir)
            if self.reuse:
                info = read_stack_info(self.state_dir)
                credentials = shared_credentials(self.state_dir)
                if info is not None and credentials is not None:
                    self._attached = info
                    self._endpoints = info.endpoints
                    self._credentials = credentials
                    self.region = info.region
                    log.debug("attached to running local stack", pid=info.pid, lambda_=info.endpoints.lambda_)
                    return self
            # the servers' modules: a Lambda runtime or a caller only talking to a stack never imports them
            from lambdarun.local.moto_server import start_moto
            from lambdarun.local.persist import MotoJournal, ServiceState, StateInUseError, secure_dir, sweep
            from lambdarun.local.service import LambdaService
            secure_dir(self.state_dir)
            sweep(self.state_dir)  # run directories of embedded stacks that were killed
            if self.shared:
                running = read_stack_info(self.state_dir)
                if running is not None:
                    raise TargetError(
                        f"a local stack is already up in {self.state_dir} (pid {running.pid}, "
                        f"{running.endpoints.lambda_}); stop it with `lambdarun local down "
                        f"--state-dir {self.state_dir}` or use another --state-dir"
                    )
                self._run_dir = self.state_dir / SHARED_DIR
            else:
                self._run_dir = self.state_dir / f"embedded-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            private_dir(self._run_dir)
            # a persisting stack keeps its key and credentials across restarts: its restored
            # functions read the key from the secret it was stored in, and callers attached
            # before (or using the printed export lines) still sign with them
            kept = StackCredentials.load(self._run_dir / CREDENTIALS_FILE) if self.persist else None
            credentials = self._credentials = kept or StackCredentials.generate()
            self._signing_key = (kept_signing_key(self._run_dir) if self.persist else None) or (
                new_signing_key(self._run_dir)
            )
            started = False
            state = None
            if self.persist:
                try:
                    state = ServiceState.open(secure_dir(self._run_dir) / "state")
                except StateInUseError as e:
                    raise TargetError(
                        f"a local stack is already up in {self.state_dir} ({e}); stop it with "
                        f"`lambdarun local down --state-dir {self.state_dir}` or use another --state-dir"
                    ) from e
                self._journal = MotoJournal(state.directory / "moto.jsonl")
            self._state = state
            try:
                try:
                    self._moto = start_moto(self.moto_port, credentials, self._journal)
                except OSError as e:
                    raise TargetError(
                        f"cannot start the moto server on 127.0.0.1:{self.moto_port}: {e}; "
                        "pick another port or 0 for any free one"
                    ) from e
                host, port = self._moto.get_host_and_port()
                moto_url = f"http://{host}:{port}"
                endpoints = {"": moto_url, **{s.upper(): moto_url for s in MOTO_SERVICES}}
                options = ServiceOptions(
                    state_dir=self._run_dir,
                    port=self.port,
                    region=self.region,
                    max_concurrency=self.max_concurrency,
                    scaling_rate=self.scaling_rate,
                    idle_timeout=self.idle_timeout,
                    async_retries=self.async_retries,
                    async_retry_delay=self.async_retry_delay,
                    memory_limit=self.memory_limit,
                    cloudwatch_logs=self.cloudwatch_logs,
                    service_endpoints=endpoints,
                    credentials=credentials,
                )
                try:
                    self._service = LambdaService(options, state).start()
                except OSError as e:
                    raise TargetError(
                        f"cannot start the local Lambda service on 127.0.0.1:{self.port}: {e}; "
                        "pick another port or 0 for any free one"
                    ) from e
                self._endpoints = Endpoints(lambda_=self._service.url, moto=moto_url)
                if self.shared:
                    self._write_state_file()
                started = True
            finally:
                if not started:
                    self._shutdown_servers()
            if self.stop_at_exit:
                # after the default session closed: its backends still clean up through us
                self._forget_at_exit = at_exit_after_sessions(self.stop)
            log.debug("local stack started", lambda_=self._endpoints.lambda_, moto=self._endpoints.moto)
            return self

    def _write_state_file(self) -> None:
        assert self._endpoints is not None
        info = StackInfo(
            pid=os.getpid(),
            endpoints=self._endpoints,
            region=self.region,
            state_dir=str(self.state_dir),
            started=time.time(),
        )
        write_private(self.state_dir / STATE_FILE, info.to_json().encode())

    def _shutdown_servers(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None
        if self._moto is not None:
            try:
                self._moto.stop()
            except Exception:  # pragma: no cover - best effort at shutdown
                log.warning("moto server did not stop cleanly", exc_info=True)
            self._moto = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._state is not None:
            self._state.close()  # releases the state directory's lock
            self._state = None

    def stop(self) -> None:
        """Stop what this object started (nothing when attached to a shared stack).

        Kills every execution environment and waits for their processes to exit.
        """
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            self._signing_key = None
            if self._attached is not None:
                self._attached = None
                self._endpoints = None
                self._credentials = None
                return
            if self._endpoints is None:
                return
            self._shutdown_servers()
            if self.shared:
                state = self.state_dir / STATE_FILE
                try:
                    if StackInfo.from_json(state.read_text()).pid == os.getpid():
                        state.unlink()
                except (OSError, ValueError, KeyError):
                    pass
                if self._run_dir is not None and not self.persist:  # logs stay; keys die with the stack
                    try:
                        (self._run_dir / CREDENTIALS_FILE).unlink()
                    except OSError:
                        pass
            elif self._run_dir is not None:
                shutil.rmtree(self._run_dir, ignore_errors=True)
            self._endpoints = None
            self._credentials = None
            if self._forget_at_exit is not None:
                self._forget_at_exit()
                self._forget_at_exit = None

    def refresh(self) -> str:
        """After a failed connection: is the stack still there?

        ``"same"`` (it still answers, same endpoints), ``"moved"`` (attached through
        ``stack.json`` and a new stack is up there: :attr:`endpoints` now points at it) or
        ``"gone"`` (nothing answers). An owned stack is ``"same"`` while it runs.
        """
        with self._lock:
            if self._service is not None:
                return "same"
            attached = self._attached
            if attached is None or self._endpoints is None:
                return "gone"
            if not attached.state_dir:  # attached to explicit endpoints: nothing to re-read
                return "same" if self.alive() else "gone"
            info = read_stack_info(attached.state_dir)
            if info is None:
                return "gone"
            if info.pid == attached.pid and info.endpoints == attached.endpoints:
                return "same"
            log.info("local stack restarted: following it", old_pid=attached.pid, pid=info.pid,
                     lambda_=info.endpoints.lambda_)
            self._attached = info
            self._endpoints = info.endpoints
            # a restarted stack keeps its credentials unless its state was forgotten: re-read
            self._credentials = shared_credentials(attached.state_dir) or self._credentials
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        return "moved"

    def unavailable(self, doing: str, *, maybe_ran: bool = False) -> LocalStackUnavailableError:
        """The error to raise when the stack went down while ``doing`` something."""
        return LocalStackUnavailableError.of(self._attached, str(self.state_dir), doing,
                                             maybe_ran=maybe_ran)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what users need -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._endpoints is not None

    def alive(self) -> bool:
        """True when the stack answers its health check (owned or attached)."""
        if self._endpoints is None:
            return False
        try:
            return bool(health(self._endpoints.lambda_, self._credentials, self.region).get("pid"))
        except (OSError, ValueError):
            return False

    @property
    def owned(self) -> bool:
        """True when this process runs the servers (False when attached to a shared stack)."""
        return self._service is not None

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise TargetError("the local stack is not running: call LocalStack.start() first")
        return self._endpoints

    @property
    def credentials(self) -> StackCredentials:
        """The stack's access key id and secret: the only ones its endpoints accept."""
        if self._credentials is None:
            raise TargetError("the local stack is not running: call LocalStack.start() first")
        return self._credentials

    def signed_request(self, url: str, *, method: str = "GET", data: bytes | None = None,
                       headers: Mapping[str, str] | None = None) -> urllib.request.Request:
        """A ``urllib`` request to one of this stack's endpoints, signed with its credentials
        (for the ``/_lambdarun/...`` extension API and moto's ``/moto-api/``)."""
        return auth.signed_request(url, self.credentials, method=method, data=data,
                                   headers=headers, region=self.region)

    @property
    def lambda_url(self) -> str:
        return self.endpoints.lambda_

    @property
    def moto_url(self) -> str:
        return self.endpoints.moto

    @property
    def pid(self) -> int:
        """Pid of the process running the servers."""
        if self._attached is not None:
            return self._attached.pid
        return os.getpid()

    @property
    def service(self) -> LambdaService | None:
        """The in-process Lambda service (None when attached to a shared stack)."""
        return self._service

    @property
    def run_dir(self) -> Path | None:
        """Where this stack keeps extracted code and ``logs/<function>/`` (owned stacks)."""
        return self._run_dir

    @property
    def signing_key(self) -> bytes | None:
        """The envelope signing key of this stack: generated (32 random bytes) each time an
        owned stack starts and kept in ``<run_dir>/signing-key`` (0600); an attached process
        reads it from the shared stack's run dir. None for a stack known only by endpoints."""
        if self._signing_key is None and self._attached is not None and self._attached.state_dir:
            path = Path(self._attached.state_dir) / "shared" / SIGNING_KEY_FILE
            try:
                self._signing_key = path.read_bytes().strip() or None
            except OSError as exc:
                raise TargetError(
                    f"cannot read the local stack's signing key {path} ({exc}); only the user "
                    "who ran `lambdarun local up` can use that stack"
                ) from exc
        return self._signing_key

    @property
    def concurrency_limit(self) -> int:
        """The stack's account concurrency (calls beyond it get 429)."""
        if self._service is not None:
            return self._service.options.concurrency_limit
        try:
            return int(health(self.endpoints.lambda_, self._credentials, self.region)["concurrency_limit"])
        except (OSError, ValueError, KeyError):
            return self.max_concurrency or ACCOUNT_CONCURRENCY

    def reset_aws(self) -> None:
        """Forget everything moto holds (buckets, tables, queues, ...): its ``/moto-api/reset``.

        moto keeps its state per process, so stacks started in one process share it.
        Lambda functions are not affected.
        """
        req = self.signed_request(self.endpoints.moto + "/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def environment(self) -> dict[str, str]:
        """``AWS_ENDPOINT_URL_*``, region and the stack's credentials for a boto3 user of it."""
        return {
            **self.endpoints.environment(),
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            **self.credentials.environment(),
        }

    def export_lines(self) -> list[str]:
        """``export NAME=value`` lines of :meth:`environment` (what ``local up`` prints)."""
        return [f"export {k}={v}" for k, v in self.environment().items()]

    def client(self, service: str, **config: Any) -> Any:
        """A boto3 client for ``service`` on this stack (its credentials), cached per name.

        Keyword arguments become a ``botocore.config.Config`` (then the client is not cached).
        """
        with self._lock:
            if not config and service in self._clients:
                return self._clients[service]
            import boto3
            from botocore.config import Config

            cfg = Config(**{
                "max_pool_connections": 64,
                "read_timeout": 905 if service == "lambda" else 60,
                **config,
            })
            session = boto3.session.Session(region_name=self.region, **self.credentials.boto3_kwargs())
            client = session.client(service, endpoint_url=self.endpoints.url(service), config=cfg)
            if not config:
                self._clients[service] = client
            return client
