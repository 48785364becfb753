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

from lambdarun.errors import TargetError
from lambdarun.hookspecs import hookimpl
from lambdarun.local.stack import DUMMY_CREDENTIALS, LocalStack, default_state_dir
from lambdarun.session import at_exit_after_sessions
from lambdarun.targets import Boto3Target
from lambdarun.types import FunctionSpec

if TYPE_CHECKING:
    from lambdarun.config import ConfigRegistry, Settings

__all__ = ["LocalConfig", "LocalTarget", "embedded_stack", "stop_embedded_stacks"]

log = structlog.get_logger(__name__)

DEFAULT_BUCKET = "lambdarun-local"
LOCAL_CODE_BUCKET = "__local__"


@attrs.define(kw_only=True)
class LocalConfig:
    """``[local]``: the local target (embedded Lambda service + moto server)."""

    #: stack.json, extracted code and logs
    state_dir: str = str(default_state_dir())
    #: Lambda API port of an embedded stack (0: a free port)
    port: int = 0
    #: moto server port of an embedded stack (0: a free port)
    moto_port: int = 0
    #: global concurrency limit (0: CPU count x 4)
    max_concurrency: int = 0
    #: seconds an idle execution environment stays warm
    idle_timeout: float = 300.0
    #: retries of a failed asynchronous (Event) invocation
    async_retries: int = 2
    #: seconds between those retries
    async_retry_delay: float = 1.0
    #: enforce MemorySize with RLIMIT_AS in the workers
    memory_limit: bool = True
    #: also ship invocation logs to CloudWatch Logs in moto (costs throughput)
    cloudwatch_logs: bool = False
    #: attach to a running `lambdarun local up` in state_dir instead of starting one
    reuse: bool = True


_embedded: dict[tuple[Any, ...], LocalStack] = {}
_embedded_lock = threading.Lock()


def embedded_stack(config: LocalConfig, region: str) -> LocalStack:
    """The process-wide stack for ``config`` (started once, stopped at exit)."""
    key = attrs.astuple(config) + (region,)
    with _embedded_lock:
        stack = _embedded.get(key)
        if stack is not None and stack.running and not stack.owned and not stack.alive():
            stack.stop()  # the shared stack it attached to went down: attach/start anew
        if stack is None or not stack.running:
            stack = LocalStack(
                config.state_dir,
                port=config.port,
                moto_port=config.moto_port,
                region=region,
                max_concurrency=config.max_concurrency,
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
    """Target ``local``: boto3 against the local stack, with dummy credentials.

    :param settings: resolved settings (``region`` and the ``[local]`` section).
    :param stack: use this (started or not) stack instead of the process-wide embedded one.
    """

    name = "local"

    def __init__(self, settings: Settings, *, stack: LocalStack | None = None) -> None:
        super().__init__(settings, endpoints={}, credentials=DUMMY_CREDENTIALS, name="local")
        self._endpoints = {}  # ignore [aws] endpoint settings: the local stack decides
        self._stack = stack
        self._start_lock = threading.Lock()

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
        """How many invocations the local stack runs at once (more synchronous ones get 429)."""
        return self.stack.concurrency_limit

    def client(self, service: str) -> Any:
        endpoints = self.stack.endpoints
        self._endpoints.setdefault(service, endpoints.url(service))
        return super().client(service)

    def endpoint_url(self, service: str) -> str | None:
        return self.stack.endpoints.url(service)

    def environment(self) -> dict[str, str]:
        self.stack  # noqa: B018 - make sure endpoints are known
        return super().environment()

    def ensure_function(self, spec: FunctionSpec) -> str:
        """Create (or bring up to date) ``spec`` from the current environment.

        A function deployed by ``lambdarun deploy`` (tagged ``lambdarun:managed-by =
        lambdarun-deploy``) is left untouched and used as is.

        The code is the current working directory, used in place; ``PYTHONPATH`` carries
        this process's extra import paths so whatever imports here imports there, and this
        process's ``LAMBDARUN_*`` variables are passed on (``spec.environment`` wins).
        """
        from lambdarun.deploy.plan import MANAGED_TAG, MANAGED_VALUE  # ~20 ms: only when needed

        lam = self.client("lambda")
        code_dir = os.path.realpath(os.getcwd())
        # the caller's lambdarun configuration from the environment travels with the code
        # (a lambdarun.toml in the working directory is found by the function anyway)
        forwarded = {k: v for k, v in os.environ.items() if k.startswith("LAMBDARUN_")}
        variables = {**forwarded, **dict(spec.environment)}
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
                )
            except lam.exceptions.ResourceConflictException:
                current = lam.get_function(FunctionName=spec.name)  # created concurrently
        if current is not None:
            cfg = current["Configuration"]
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
        url = (f"{self.stack.endpoints.lambda_}/_lambdarun/functions/"
               f"{urllib.parse.quote(function_name, safe='')}/stop")
        req = urllib.request.Request(
            url, data=json.dumps({"marker": marker}).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                doc = json.loads(response.read())
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
        """``storage_url`` when set, else ``s3://lambdarun-local/lambdarun`` in moto (created)."""
        if self.settings.storage_url:
            return self.settings.storage_url
        s3 = self.client("s3")
        try:
            s3.create_bucket(Bucket=DEFAULT_BUCKET)
        except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            pass
        return f"s3://{DEFAULT_BUCKET}/lambdarun"

    def close(self) -> None:
        """Close the clients. The embedded stack keeps running until the process exits (other
        sessions reuse it; :func:`stop_embedded_stacks` stops it sooner); a stack passed to
        the constructor belongs to the caller and is left alone."""
        super().close()
        self._endpoints = {}


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
