"""``run_worker``: one Temporal worker per Lambda invocation, bounded by the deadline.

Per invocation the handler

1. builds a fresh :class:`LambdaWorkerConfig` and enters ``configure`` (sync, coroutine,
   async generator or async context manager);
2. checks that the Lambda has enough time left for the shutdown budget plus some work;
3. connects (bounded by ``connect_timeout`` and the deadline) with a runtime of its own;
4. runs the worker until the task queue is idle (see below), the deadline minus the
   shutdown buffer arrives, or the worker stops by itself;
5. on *every* path, also after a failure in 1-4: shuts the worker down (bounded), runs the
   shutdown hooks (each failure logged, each hook bounded by a slice of the hook budget),
   then the async-generator teardown, and re-raises the first error;
6. drops worker, client and runtime and collects garbage before returning, so no temporalio
   object is finalized during interpreter shutdown (the ``PyGILState_Release`` crash).

Step 4 is :mod:`._supervise`, step 5 :mod:`._shutdown`, the client profile
:mod:`._client_profile`. Idle means idle (see :mod:`._idle`): the idle clock starts only once the server lists this
worker's pollers for every task type it polls, and the worker returns ``idle`` only after
nothing ran for ``idle_timeout`` and the server then reports an empty backlog. A server
that cannot answer (down, unreachable) never makes a worker idle: it works on until the
deadline.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeAlias

import attrs
import temporalio.client
import temporalio.runtime
import temporalio.worker
import temporalio.workflow
from temporalio.common import WorkerDeploymentVersion
from temporalio.envconfig import ClientConfigProfile
from temporalio.worker import WorkerDeploymentConfig

from lambdarun_temporal.errors import (
    LambdaTimeoutTooShortError,
    LambdaWorkerConfigError,
    TemporalConnectError,
)
from lambdarun_temporal.lambda_worker._client_profile import load_client_profile
from lambdarun_temporal.lambda_worker._configure import (
    LambdaWorkerConfig,
    derived_shutdown_buffer,
)
from lambdarun_temporal.lambda_worker._defaults import (
    ENV_TASK_QUEUE,
    MIN_WORK_TIME,
    SHUTDOWN_MARGIN,
    apply_lambda_worker_defaults,
    build_lambda_identity,
    module_logger,
)
from lambdarun_temporal.lambda_worker._idle import (
    ServerView,
    TaskTracker,
    install_tracking,
    polled_types,
)
from lambdarun_temporal.lambda_worker._shutdown import (
    HookWindow,
    exit_configure,
    run_shutdown_hooks,
    shutdown_worker,
)
from lambdarun_temporal.lambda_worker._supervise import supervise, time_left

__all__ = ["ConfigureCallback", "InvocationSummary", "run_worker", "load_client_profile"]

#: stdlib logging under the reference's logger name (``temporalio.contrib.aws.lambda_worker._run_worker``):
#: in Lambda the runtime's log handler formats these records with the request id.
logger = module_logger(__name__)

ConfigureCallback: TypeAlias = Callable[
    [LambdaWorkerConfig],
    "None | Awaitable[None] | AsyncGenerator[None, None] | AbstractAsyncContextManager[None]",
]



@attrs.frozen
class InvocationSummary:
    """What one invocation did; the handler returns it as a dict (JSON for Lambda)."""

    stop_reason: str  # "idle" | "deadline" | "worker_stopped"
    workflow_activations: int
    activities: int
    seconds: float
    #: seconds from the invocation's start until the server listed this worker's pollers
    #: (the idle clock's start); None when it never did (or idle_timeout is None)
    ready_seconds: float | None = None
    #: seconds from the invocation's start until the worker was told to stop
    stop_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@dataclass
class _WorkerDeps:
    """What the handler calls outside itself (the reference's test seam, same fields)."""

    connect: Callable[..., Awaitable[temporalio.client.Client]] = field(
        default_factory=lambda: temporalio.client.Client.connect
    )
    create_worker: Callable[..., temporalio.worker.Worker] = field(
        default_factory=lambda: temporalio.worker.Worker
    )
    load_config: Callable[[], ClientConfigProfile] | None = None
    getenv: Callable[[str], str | None] = field(default_factory=lambda: os.environ.get)
    extract_lambda_ctx: Callable[[Any], tuple[str, str] | None] | None = None


def _default_extract_lambda_ctx(lambda_context: Any) -> tuple[str, str] | None:
    """``(request id, function ARN)`` of a Lambda context, or None without both."""
    request_id = getattr(lambda_context, "aws_request_id", None)
    function_arn = getattr(lambda_context, "invoked_function_arn", None)
    if request_id is not None and function_arn is not None:
        return (request_id, function_arn)
    return None


def _check_version(version: WorkerDeploymentVersion) -> None:
    if not version.deployment_name or not version.build_id:
        raise LambdaWorkerConfigError(
            "version is required (deployment_name and build_id must be set)"
        )


def _sandboxed_handler(_event: Any, _context: Any) -> dict[str, Any]:
    raise RuntimeError(
        "this run_worker handler was built inside the Temporal workflow sandbox (which "
        "re-imports the handler module for each workflow run) and cannot be invoked; "
        "invoke the handler of the module Lambda imported."
    )


def run_worker(
    version: WorkerDeploymentVersion,
    configure: ConfigureCallback,
) -> Callable[[Any, Any], dict[str, Any]]:
    """Create a Lambda handler that runs a Temporal worker for each invocation.

    Same contract as ``temporalio.contrib.aws.lambda_worker.run_worker`` (see the package
    docstring), with an idle exit, throughput defaults, a deadline that includes shutdown
    hooks, hooks on every exit path and a clean interpreter exit. The handler returns
    :meth:`InvocationSummary.to_dict`.

    Raises :class:`LambdaWorkerConfigError` (a ``ValueError``) at cold start for a bad
    version or config file (the reference logs it and calls ``sys.exit(1)``).

    Inside the workflow sandbox (which re-imports the module that defines a workflow, so a
    handler module's ``run_worker(...)`` line runs again for every workflow run) it only
    checks the version and returns a handler that refuses to run: no config file is read
    and nothing the sandbox forbids is touched.
    """
    if temporalio.workflow.unsafe.in_sandbox():
        _check_version(version)
        return _sandboxed_handler
    return _run_worker_internal(version, configure, _WorkerDeps())


def _run_worker_internal(
    version: WorkerDeploymentVersion,
    configure: ConfigureCallback,
    deps: _WorkerDeps,
) -> Callable[[Any, Any], dict[str, Any]]:
    """:func:`run_worker` with its outside calls in ``deps`` (the reference's seam)."""
    _check_version(version)
    profile = (deps.load_config or load_client_profile)()
    base_connect_config: dict[str, Any] = {**profile.to_client_connect_config()}
    base_worker_config: dict[str, Any] = {}
    apply_lambda_worker_defaults(base_worker_config)  # type: ignore[arg-type]
    base_worker_config["deployment_config"] = WorkerDeploymentConfig(
        version=version, use_worker_versioning=True
    )
    env_task_queue = deps.getenv(ENV_TASK_QUEUE)
    extract_lambda_ctx = deps.extract_lambda_ctx or _default_extract_lambda_ctx

    def new_config() -> LambdaWorkerConfig:
        config = LambdaWorkerConfig(
            client_connect_config={**base_connect_config},  # type: ignore[arg-type]
            worker_config={**base_worker_config},  # type: ignore[arg-type]
        )
        if env_task_queue:
            config.worker_config["task_queue"] = env_task_queue
        return config

    def handler(event: Any, context: Any) -> dict[str, Any]:
        start = time.monotonic()
        deadline = _deadline_of(context, start)
        try:
            return _run_loop(
                _invocation(context, configure, new_config, start, deadline, deps, extract_lambda_ctx),
                deadline,
            )
        finally:
            # Finalize every temporalio object (worker, client, runtime) now, while the
            # interpreter is fully alive: objects left in reference cycles were otherwise
            # finalized during interpreter shutdown, where the bridge's Rust threads call
            # PyGILState_Ensure/Release and crash the process (SIGSEGV/SIGABRT at exit in
            # 9 of 60 runs without this collection, 0 of 60 with it; see README).
            gc.collect()

    handler.new_config = new_config  # type: ignore[attr-defined]  # for tests and tools
    return handler


def _deadline_of(context: Any, start: float) -> float | None:
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if remaining_ms is None:
        return None
    return start + remaining_ms() / 1000.0


def _run_loop(coro: Awaitable[dict[str, Any]], deadline: float | None) -> dict[str, Any]:
    """Like ``asyncio.run`` but never waits on leftover threads past the deadline."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                wait = 0.2 if deadline is None else max(0.0, min(0.2, time_left(deadline) - 0.05))
                loop.run_until_complete(asyncio.wait(pending, timeout=wait))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _invocation(
    context: Any,
    configure: ConfigureCallback,
    new_config: Callable[[], LambdaWorkerConfig],
    start: float,
    deadline: float | None,
    deps: _WorkerDeps,
    extract_lambda_ctx: Callable[[Any], tuple[str, str] | None],
) -> dict[str, Any]:
    config = new_config()
    default_buffer = config.shutdown_deadline_buffer
    tracker = TaskTracker()
    error: BaseException | None = None
    configure_cm: Any = None
    worker: temporalio.worker.Worker | None = None
    run_task: asyncio.Task[None] | None = None
    stop_reason = "error"
    stopped_at: float | None = None
    try:
        configure_cm = await _bounded_configure(configure, config, deadline)
        if not config.worker_config.get("task_queue"):
            raise LambdaWorkerConfigError(
                'task queue not configured: set worker_config["task_queue"] or the '
                "TEMPORAL_TASK_QUEUE environment variable"
            )
        if config.shutdown_deadline_buffer == default_buffer:
            # Untouched by configure: follow graceful shutdown and hook budget (reserved
            # only when there is a hook or a teardown to run).
            has_hooks = bool(config.shutdown_hooks) or configure_cm is not None
            config.shutdown_deadline_buffer = derived_shutdown_buffer(
                config.graceful_shutdown_timeout(),
                config.shutdown_hook_budget if has_hooks else timedelta(0),
            )
        stop_at = _check_deadline(config, deadline)

        connect_kwargs: dict[str, Any] = {**config.client_connect_config}
        if "identity" not in connect_kwargs:
            ctx_info = extract_lambda_ctx(context)
            if ctx_info is not None:
                connect_kwargs["identity"] = build_lambda_identity(*ctx_info)
        if connect_kwargs.get("runtime") is None:
            # A runtime per invocation: its threads end with the invocation instead of
            # idling through Lambda's freeze, and nothing outlives the handler.
            connect_kwargs["runtime"] = temporalio.runtime.Runtime(
                telemetry=temporalio.runtime.TelemetryConfig()
            )
        client = await _connect(deps.connect, connect_kwargs, config.connect_timeout, stop_at)

        worker_kwargs: dict[str, Any] = {**config.worker_config}
        install_tracking(worker_kwargs, tracker)
        worker = deps.create_worker(client, **worker_kwargs)
        view = ServerView(
            client,
            worker_kwargs["task_queue"],
            worker_kwargs.get("identity") or client.identity,
            polled_types(worker_kwargs),
        )
        del client, connect_kwargs
        run_task = asyncio.create_task(worker.run(), name="temporal-worker")
        stop_reason = await supervise(run_task, tracker, stop_at, config.idle_timeout, view)
        stopped_at = time.monotonic()
        del view
        logger.info(
            "temporal lambda worker stopping (reason=%s, workflow_activations=%d, activities=%d)",
            stop_reason,
            tracker.workflow_activations,
            tracker.activities,
        )
    except BaseException as exc:  # noqa: BLE001 - reported after shutdown, below
        error = exc
    finally:
        if worker is not None:
            error = await shutdown_worker(worker, run_task, config, deadline, error)
        del worker, run_task
        hooks = list(config.shutdown_hooks)
        window = HookWindow.open(config, deadline, len(hooks) + (configure_cm is not None))
        await run_shutdown_hooks(window, hooks)
        if configure_cm is not None:
            error = await exit_configure(configure_cm, window.next_share(), error)
    if error is not None:
        raise error
    return InvocationSummary(
        stop_reason=stop_reason,
        workflow_activations=tracker.workflow_activations,
        activities=tracker.activities,
        seconds=round(time.monotonic() - start, 3),
        ready_seconds=None if tracker.ready_at is None else round(tracker.ready_at - start, 3),
        stop_seconds=None if stopped_at is None else round(stopped_at - start, 3),
    ).to_dict()


async def _bounded_configure(
    configure: ConfigureCallback, config: LambdaWorkerConfig, deadline: float | None
) -> Any:
    """Enter ``configure``; its async part may not eat the time reserved for shutdown."""
    if deadline is None:
        return await _enter_configure(configure, config)
    limit = deadline - time.monotonic() - config.shutdown_deadline_buffer.total_seconds()
    try:
        return await asyncio.wait_for(_enter_configure(configure, config), timeout=max(limit, 0.001))
    except asyncio.TimeoutError as exc:
        raise LambdaWorkerConfigError(
            f"configure did not finish within {max(limit, 0):.1f} s (the invocation's time "
            "minus the shutdown buffer); move slow setup out of configure or raise the "
            "function timeout."
        ) from exc


async def _enter_configure(configure: ConfigureCallback, config: LambdaWorkerConfig) -> Any:
    """Run ``configure``; return the entered async context manager for the generator forms."""
    if inspect.isasyncgenfunction(configure):
        cm: Any = asynccontextmanager(configure)(config)
    else:
        result: Any = configure(config)
        if inspect.isawaitable(result):
            result = await result
        if result is None or not hasattr(result, "__aenter__"):
            return None
        cm = result
    await cm.__aenter__()
    return cm


def _check_deadline(config: LambdaWorkerConfig, deadline: float | None) -> float | None:
    """Return when to stop working (monotonic), or raise for a too-short timeout."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    buffer = config.shutdown_deadline_buffer.total_seconds()
    work = remaining - buffer
    if work <= MIN_WORK_TIME.total_seconds():
        need = buffer + MIN_WORK_TIME.total_seconds()
        raise LambdaTimeoutTooShortError(
            # the reference's message, then what to set
            f"Lambda timeout is too short: {remaining:.1f}s remaining but {buffer:.1f}s is "
            "reserved for shutdown, leaving no time for work. Increase the function timeout "
            "or decrease the shutdown deadline buffer (the buffer is graceful_shutdown_timeout "
            f"{config.graceful_shutdown_timeout().total_seconds():.1f}s + shutdown_hook_budget "
            f"{config.shutdown_hook_budget.total_seconds():.1f}s + "
            f"{SHUTDOWN_MARGIN.total_seconds():.1f}s margin unless shutdown_deadline_buffer is "
            f"set; a function timeout of at least {int(need) + 1}s leaves time for work)"
        )
    if work < 5:
        logger.warning(
            "Lambda timeout leaves less than 5s for work after shutdown buffer; consider "
            "increasing the function timeout or decreasing the shutdown deadline buffer "
            "(work_time=%s, shutdown_buffer=%s)",
            timedelta(seconds=work),
            config.shutdown_deadline_buffer,
        )
    return deadline - buffer


async def _connect(
    connect: Callable[..., Awaitable[temporalio.client.Client]],
    kwargs: dict[str, Any],
    connect_timeout: timedelta,
    stop_at: float | None,
) -> temporalio.client.Client:
    timeout = min(connect_timeout.total_seconds(), time_left(stop_at))
    target = kwargs.get("target_host", "localhost:7233")
    try:
        return await asyncio.wait_for(connect(**kwargs), timeout=timeout)
    except asyncio.TimeoutError as exc:
        raise TemporalConnectError(
            f"Could not connect to the Temporal server at {target} (namespace "
            f"{kwargs.get('namespace', 'default')!r}) within {timeout:.1f} s; check the address, "
            "TLS / API key settings and the network path from the Lambda function."
        ) from exc
    except Exception as exc:
        exc.add_note(f"while connecting to the Temporal server at {target}")
        raise


