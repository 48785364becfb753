"""The ``local`` target (a default plugin): the embedded local stack behind boto3.

``target = "local"`` (the default) gives a :class:`LocalTarget`. The first time it is used it
attaches to a shared stack (``lambdarun local up``) recorded in the state directory, or
starts an embedded one in the background of this process (stopped at exit). Functions run
from the current environment: :meth:`LocalTarget.ensure_function` creates the function with
the current working directory as its code (no upload) and this process's import paths.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from lambdarun.config import non_negative, port_number, positive
from lambdarun.errors import FunctionKeyConflictError, TargetError
from lambdarun.hookspecs import hookimpl
from lambdarun.limits import SCALING_RATE
from lambdarun.local.stack import LocalStack, default_state_dir, read_stack_info
from lambdarun.session import at_exit_after_sessions
from lambdarun.signing import SECRET_VARIABLE, key_id
from lambdarun.targets import Boto3Target
from lambdarun.types import FunctionSpec

if TYPE_CHECKING:
    from lambdarun.config import ConfigRegistry, Settings

__all__ = ["LocalConfig", "LocalTarget", "create_bucket", "embedded_stack", "stop_embedded_stacks"]

log = structlog.get_logger(__name__)

#: the most invocations one caller keeps in flight on the local target by default
CALLER_CONCURRENCY = (os.cpu_count() or 2) * 4

DEFAULT_BUCKET = "lambdarun-local"
LOCAL_CODE_BUCKET = "__local__"
#: the local Secrets Manager secret holding a signing key is named after the key's id
LOCAL_SECRET_PREFIX = "lambdarun/signing-key/"
#: caller variables never forwarded into a function: the function gets its key from the
#: secret set by ensure_function, never from plain environment
_NOT_FORWARDED = frozenset({"LAMBDARUN_SIGNING_KEY", SECRET_VARIABLE, "LAMBDARUN_ALLOW_UNSIGNED"})


@attrs.define(kw_only=True)
class LocalConfig:
    """``[local]``: the local target (embedded Lambda service + moto server)."""

    #: stack.json, extracted code and logs
    state_dir: str = str(default_state_dir())
    #: Lambda API port of an embedded stack (0: a free port)
    port: int = attrs.field(default=0, validator=port_number)
    #: moto server port of an embedded stack (0: a free port)
    moto_port: int = attrs.field(default=0, validator=port_number)
    #: the account's concurrent executions (0: AWS's default, 1,000)
    max_concurrency: int = attrs.field(default=0, validator=non_negative)
    #: new execution environments one function may get per 10 s (AWS: 1,000)
    scaling_rate: int = attrs.field(default=SCALING_RATE, validator=positive)
    #: seconds an idle execution environment stays warm
    idle_timeout: float = 300.0
    #: retries of a failed asynchronous (Event) invocation
    async_retries: int = 2
    #: seconds between those retries
    async_retry_delay: float = 1.0
    #: enforce MemorySize (an environment past it is killed: Runtime.OutOfMemory)
    memory_limit: bool = True
    #: also ship invocation logs to CloudWatch Logs in moto (costs throughput)
    cloudwatch_logs: bool = False
    #: attach to a running `lambdarun local up` in state_dir instead of starting one
    reuse: bool = True
    #: run the embedded stack in a child process (its own GIL; it dies with this process)
    #: instead of in threads of this one
    out_of_process: bool = True


_embedded: dict[tuple[Any, ...], LocalStack] = {}
_embedded_lock = threading.Lock()


def embedded_stack(config: LocalConfig, region: str) -> LocalStack:
    """The process-wide stack for ``config`` (started once, stopped at exit)."""
    key = attrs.astuple(config) + (region,)
    with _embedded_lock:
        stack = _embedded.get(key)
        if (stack is not None and stack.running and not stack.owned and not stack.alive()
                and stack.refresh() != "moved"):
            stack.stop()  # the shared stack it attached to is down: attach/start anew
        if stack is None or not stack.running:
            kind = LocalStack
            if config.out_of_process and not (config.reuse and read_stack_info(config.state_dir)):
                from lambdarun.local.child import ChildStack

                kind = ChildStack
            stack = kind(
                config.state_dir,
                port=config.port,
                moto_port=config.moto_port,
                region=region,
                max_concurrency=config.max_concurrency,
                scaling_rate=config.scaling_rate,
                idle_timeout=config.idle_timeout,
                async_retries=config.async_retries,
                async_retry_delay=config.async_retry_delay,
                memory_limit=config.memory_limit,
                cloudwatch_logs=config.cloudwatch_logs,
                reuse=config.reuse,
                stop_at_exit=False,  # stopped after the default session closed (below)
            ).start()
            at_exit_after_sessions(stop_embedded_stacks)
            _embedded[key] = stack
        return stack


def stop_embedded_stacks() -> None:
    """Stop every embedded stack this process started (also done at exit)."""
    with _embedded_lock:
        stacks = list(_embedded.values())
        _embedded.clear()
    for stack in stacks:
        stack.stop()


def _import_paths() -> list[str]:
    """This process's import paths that the worker interpreter would not have by itself."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out: list[str] = []
    for entry in [os.getcwd(), *sys.path]:
        path = os.path.realpath(entry or os.getcwd())
        if not os.path.isdir(path) or path in out:
            continue
        if any(path == p or path.startswith(p + os.sep) for p in prefixes):
            continue
        out.append(path)
    return out


class LocalTarget(Boto3Target):
    """Target ``local``: boto3 against the local stack, with the stack's own credentials
    (never the user's).

    :param settings: resolved settings (``region`` and the ``[local]`` section).
    :param stack: use this (started or not) stack instead of the process-wide embedded one.
    """

    name = "local"
    #: the functions run in worker processes on this machine
    runs_on_this_machine = True

    def __init__(self, settings: Settings, *, stack: LocalStack | None = None) -> None:
        # placeholder credentials until the stack is known (see _session): never the user's
        super().__init__(settings, endpoints={}, credentials={"aws_access_key_id": "pending",
                                                             "aws_secret_access_key": "pending"},
                         name="local")
        self._endpoints = {}  # ignore [aws] endpoint settings: the local stack decides
        self._stack = stack
        self._start_lock = threading.RLock()
        self._followed: dict[str, Any] = {}

    @property
    def stack(self) -> LocalStack:
        """The local stack, started (or attached) on first use."""
        with self._start_lock:
            if self._stack is None:
                # inside a function run by the local service: use the stack running it
                self._stack = LocalStack.from_function_environment() or embedded_stack(
                    self.settings.section("local"), self.region
                )
            elif not self._stack.running:
                self._stack.start()
            if not self._endpoints:
                self._endpoints = dict(self._stack.endpoints.as_dict())
            return self._stack

    @property
    def concurrency_limit(self) -> int:
        """How many invocations a caller keeps in flight on the local target: the stack's
        account concurrency (``max_concurrency``; more synchronous ones get 429), capped at
        4 x this machine's CPUs, since every function runs on this machine (a 1,000-way
        window would only start 1,000 cold environments on two cores). Set ``max_workers``
        to go wider, e.g. for calls that mostly wait."""
        return min(self.stack.concurrency_limit, CALLER_CONCURRENCY)

    def _session(self) -> Any:
        # the stack's credentials: the only ones its endpoints accept (a new stack, after
        # the shared one went down, has new ones)
        credentials = self.stack.credentials.boto3_kwargs()
        if credentials != self._credentials:
            self._credentials = credentials
            self._boto_session = None
        return super()._session()

    def client(self, service: str) -> Any:
        endpoints = self.stack.endpoints
        self._endpoints.setdefault(service, endpoints.url(service))
        client = super().client(service)
        with self._start_lock:
            if self._followed.get(service) is not client:
                self._follow(service, client)
                self._followed[service] = client
        return client

    # -- following a restarted shared stack --------------------------------------------

    def _follow(self, service: str, client: Any) -> None:
        """Make ``client`` survive a restart of the shared stack it talks to: every request
        is sent to the stack's current endpoint, and a failed connection re-reads
        ``stack.json``: a request that never reached the old stack goes to the new one; one
        that may have reached it (an Invoke in flight when it died), or any request when no
        stack is up, raises :class:`~lambdarun.local.stack.LocalStackUnavailableError`
        instead of retrying a dead port."""
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, HTTPClientError

        def to_current_endpoint(request: Any, **kwargs: Any) -> None:
            stack = self._stack
            if stack is None or not stack.running:
                return
            current = stack.endpoints.url(service)
            if not request.url.startswith(current + "/") and request.url != current:
                parts = urllib.parse.urlsplit(request.url)
                base = urllib.parse.urlsplit(current)
                request.url = urllib.parse.urlunsplit(parts._replace(scheme=base.scheme, netloc=base.netloc))

        def on_failure(caught_exception: BaseException | None = None, operation: Any = None,
                       attempts: int = 1, **kwargs: Any) -> int | None:
            if not isinstance(caught_exception, (HTTPClientError, BotoConnectionError)):
                return None
            stack = self._stack
            if stack is None:
                return None
            not_sent = isinstance(caught_exception, (EndpointConnectionError, ConnectTimeoutError))
            name = getattr(operation, "name", "the request")
            state = stack.refresh()
            if state == "same":
                return None  # the stack is up: botocore's retry policy decides
            if not not_sent and name == "Invoke":
                raise stack.unavailable(f"{name} ({service})", maybe_ran=True) from caught_exception
            if state == "gone":
                raise stack.unavailable(f"{name} ({service})") from caught_exception
            self._endpoints = dict(stack.endpoints.as_dict())
            return 0  # "moved": send it again now, to the new stack

        client.meta.events.register("before-sign", to_current_endpoint,
                                    unique_id="lambdarun-local-endpoint")
        client.meta.events.register_first("needs-retry", on_failure,
                                          unique_id="lambdarun-local-follow")

    def lambda_connection_failed(self, error: BaseException, *, sent: bool) -> bool:
        """The invoker's connection failed (:mod:`lambdarun.lambda_http`): :meth:`_follow`'s
        rule. True: resend now (the stack moved, nothing was sent); False: its retry rules
        decide; raises LocalStackUnavailableError (no stack, or the Invoke may have run)."""
        stack = self._stack
        if stack is None or (state := stack.refresh()) == "same":
            return False
        if sent:
            raise stack.unavailable("Invoke (lambda)", maybe_ran=True) from error
        if state == "gone":
            raise stack.unavailable("Invoke (lambda)") from error
        self._endpoints = dict(stack.endpoints.as_dict())
        return True

    def endpoint_url(self, service: str) -> str | None:
        return self.stack.endpoints.url(service)

    def state_dir(self) -> Path:
        """The stack's state folder (``[local] state_dir``); never starts the stack."""
        stack = self._stack
        return Path(stack.state_dir) if stack is not None else Path(self.settings.section("local").state_dir)

    def environment(self) -> dict[str, str]:
        """Endpoints, region and the stack's credentials for a boto3 user of the stack."""
        stack = self.stack
        return {**super().environment(), **stack.credentials.environment()}

    def signing_key(self) -> bytes | None:
        """``signing_key`` / ``signing_key_secret`` when configured, else the stack's own key."""
        return super().signing_key() or self.stack.signing_key

    def signing_key_secret(self) -> str | None:
        """The secret in the stack's Secrets Manager holding :meth:`signing_key` (created when
        missing, e.g. after a moto reset), or ``signing_key_secret`` when configured."""
        if self.settings.signing_key_secret:
            return self.settings.signing_key_secret
        key = self.signing_key()
        if key is None:
            return None
        name = LOCAL_SECRET_PREFIX + key_id(key)
        sm = self.client("secretsmanager")
        try:
            sm.create_secret(
                Name=name,
                SecretString=key.decode("utf-8"),
                Description="lambdarun envelope signing key (local stack)",
            )
        except sm.exceptions.ResourceExistsException:
            pass  # the same id is the same key
        return name

    def ensure_function(self, spec: FunctionSpec) -> str:
        """Create (or bring up to date) ``spec`` from the current environment.

        A function deployed by ``lambdarun deploy`` (tagged ``lambdarun:managed-by =
        lambdarun-deploy``) is left untouched and used as is.

        The code is the current working directory, used in place; ``PYTHONPATH`` carries
        this process's extra import paths so whatever imports here imports there, and this
        process's ``LAMBDARUN_*`` variables are passed on (``spec.environment`` wins), except
        any signing key setting: the function reads the caller's key from the secret named
        in ``LAMBDARUN_SIGNING_KEY_SECRET`` (see :meth:`signing_key_secret`), and an existing
        function that verifies with another key is never rewritten
        (:class:`~lambdarun.errors.FunctionKeyConflictError`).
        """
        from lambdarun.deploy.plan import MANAGED_TAG, MANAGED_VALUE  # ~20 ms: only when needed

        lam = self.client("lambda")
        code_dir = os.path.realpath(os.getcwd())
        # the caller's lambdarun configuration from the environment travels with the code
        # (a lambdarun.toml in the working directory is found by the function anyway)
        forwarded = {
            k: v for k, v in os.environ.items() if k.startswith("LAMBDARUN_") and k not in _NOT_FORWARDED
        }
        variables = {**forwarded, **dict(spec.environment)}
        variables.pop("LAMBDARUN_SIGNING_KEY", None)
        secret = self.signing_key_secret()
        if secret:
            variables[SECRET_VARIABLE] = secret
        variables.setdefault("LAMBDARUN_STORAGE_URL", self.default_storage_url())
        paths = _import_paths()
        if variables.get("PYTHONPATH"):
            paths.append(variables["PYTHONPATH"])
        variables["PYTHONPATH"] = os.pathsep.join(paths)
        wanted = {
            "Handler": spec.handler,
            "Timeout": spec.timeout,
            "MemorySize": spec.memory_size,
            "Environment": {"Variables": variables},
        }
        try:
            current = lam.get_function(FunctionName=spec.name)
        except lam.exceptions.ResourceNotFoundException:
            current = None
        if current is not None and (current.get("Tags") or {}).get(MANAGED_TAG) == MANAGED_VALUE:
            # deployed by `lambdarun deploy` (its own zip, role, settings): use it as is, like
            # the aws target does, never replace it with the current directory
            log.debug("using the deployed function as is", function=spec.name)
            return spec.name
        if current is None:
            try:
                lam.create_function(
                    FunctionName=spec.name,
                    Runtime=f"python{sys.version_info.major}.{sys.version_info.minor}",
                    Role=f"arn:aws:iam::123456789012:role/{spec.name}",
                    Code={"S3Bucket": LOCAL_CODE_BUCKET, "S3Key": code_dir},
                    **wanted,
                    **({"DurableConfig": dict(spec.durable_config)} if spec.durable_config else {}),
                )
            except lam.exceptions.ResourceConflictException:
                current = lam.get_function(FunctionName=spec.name)  # created concurrently
        if current is not None:
            cfg = current["Configuration"]
            _check_key_settings(spec.name, (cfg.get("Environment") or {}).get("Variables") or {}, secret)
            have = {
                "Handler": cfg.get("Handler"),
                "Timeout": cfg.get("Timeout"),
                "MemorySize": cfg.get("MemorySize"),
                "Environment": {"Variables": (cfg.get("Environment") or {}).get("Variables") or {}},
            }
            if have != wanted:
                lam.update_function_configuration(FunctionName=spec.name, **wanted)
            location = (current.get("Code") or {}).get("Location", "")
            if location != Path(code_dir).as_uri():
                lam.update_function_code(
                    FunctionName=spec.name, S3Bucket=LOCAL_CODE_BUCKET, S3Key=code_dir
                )
            reserved = (current.get("Concurrency") or {}).get("ReservedConcurrentExecutions")
        else:
            reserved = None
        if spec.reserved_concurrency != reserved:
            if spec.reserved_concurrency is None:
                lam.delete_function_concurrency(FunctionName=spec.name)
            else:
                lam.put_function_concurrency(
                    FunctionName=spec.name, ReservedConcurrentExecutions=spec.reserved_concurrency
                )
        return spec.name

    def stop_invocation(self, function_name: str, marker: str) -> bool:
        """Stop the invocation of ``function_name`` whose ClientContext carries
        ``{"custom": {"lambdarun_attempt": marker}}``: kill the execution environment running
        it (the caller of a synchronous invoke gets ``Runtime.Cancelled``), or drop it from the
        Event queue. True when something was stopped or dropped, False when nothing matched
        (it already finished, or the function does not exist).

        Uses the service's ``POST /_lambdarun/functions/{name}/stop``, so it works for an
        attached (shared) stack too.
        """
        def request() -> Any:
            url = (f"{self.stack.endpoints.lambda_}/_lambdarun/functions/"
                   f"{urllib.parse.quote(function_name, safe='')}/stop")
            req = self.stack.signed_request(
                url, data=json.dumps({"marker": marker}).encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as response:
                return json.loads(response.read())

        try:
            try:
                doc = request()
            except urllib.error.URLError as e:
                if isinstance(e, urllib.error.HTTPError) or not isinstance(e.reason, ConnectionRefusedError):
                    raise
                state = self.stack.refresh()  # the shared stack may have restarted elsewhere
                if state == "gone":
                    raise self.stack.unavailable(f"stopping invocation {marker} of {function_name!r}") from e
                doc = request()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise TargetError(
                f"the local Lambda service refused to stop invocation {marker} of "
                f"{function_name!r}: HTTP {e.code} {e.read()[:300]!r}"
            ) from e
        except (OSError, ValueError) as e:
            raise TargetError(
                f"could not reach the local Lambda service at {self.stack.endpoints.lambda_} to "
                f"stop invocation {marker} of {function_name!r} ({e}); is the stack still up? "
                "(`lambdarun local status`)"
            ) from e
        return bool(doc.get("stopped") or doc.get("dropped"))

    def claims_url(self) -> str:
        """Where call attempts are claimed (:mod:`lambdarun.claims`): a 0700 directory of the
        stack's state folder. The caller and the functions of a local stack run on this
        machine and share it, so a claim costs a few file operations (not S3 round trips
        to moto); records are 0600 files."""
        path = self.stack.state_dir / "claims"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        return path.as_uri()

    def default_storage_url(self) -> str:
        """``storage_url`` when set, else ``s3://lambdarun-local/lambdarun`` in moto (created
        in this target's region)."""
        if self.settings.storage_url:
            return self.settings.storage_url
        return self.ensure_storage(f"s3://{DEFAULT_BUCKET}/lambdarun")

    def ensure_storage(self, url: str) -> str:
        """Create the bucket of an ``s3://`` URL in moto, in this target's region (S3 wants a
        ``LocationConstraint`` everywhere but us-east-1); other URLs are returned as is."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "s3" and parsed.netloc:
            create_bucket(self.client("s3"), parsed.netloc, self.region)
        return url

    def close(self) -> None:
        """Close the clients. The embedded stack keeps running until the process exits (other
        sessions reuse it; :func:`stop_embedded_stacks` stops it sooner); a stack passed to
        the constructor belongs to the caller and is left alone."""
        super().close()
        self._endpoints = {}
        self._followed.clear()


def _check_key_settings(function: str, have: dict[str, str], secret: str | None) -> None:
    """Refuse to strip or replace the key settings of an existing function."""
    current = have.get(SECRET_VARIABLE)
    if "LAMBDARUN_SIGNING_KEY" in have or (current and current != secret):
        what = "a plain LAMBDARUN_SIGNING_KEY" if "LAMBDARUN_SIGNING_KEY" in have else f"the key in secret {current!r}"
        mine = f"the key in secret {secret!r}" if secret else "no key"
        raise FunctionKeyConflictError(
            f"the function {function!r} verifies envelopes with {what}, but this caller signs "
            f"with {mine}; lambdarun does not rewrite a function's key settings. Use the same "
            "key (signing_key / signing_key_secret, or the same local stack), another "
            "function_name, or delete the function first"
        )
def create_bucket(s3: Any, bucket: str, region: str) -> None:
    """Create ``bucket`` in ``region`` unless this stack already has it."""
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass


@hookimpl
def lambdarun_register_config(register: ConfigRegistry) -> None:
    register.add_section("local", LocalConfig)


@hookimpl(trylast=True)
def lambdarun_make_target(name: str, settings: Settings) -> LocalTarget | None:
    if name != "local":
        return None
    try:
        settings.section("local")
    except Exception as e:  # the [local] section is registered by this very plugin
        raise TargetError(f"the local target needs its [local] config section: {e}") from e
    return LocalTarget(settings)


@hookimpl
def lambdarun_add_commands(cli: Any) -> None:
    from lambdarun.local.cli import local

    cli.add_command(local)
