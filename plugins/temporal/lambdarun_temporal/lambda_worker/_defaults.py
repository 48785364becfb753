"""Lambda-tuned defaults for the Temporal worker, and where each number comes from.

The reference (``temporalio.contrib.aws.lambda_worker`` 1.35.0) finished 40-64 of 200 queued
workflows in one 10 s invocation: it starts shutting down 7 s before the deadline (so only
~3 s of a 10 s function does work), polls with 2 workflow / 1 activity pollers and runs 2
activities at a time. Our defaults are chosen for a worker that lives for *one invocation*
and should drain a backlog quickly, then leave (see ``README.md`` for the measurements).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

from temporalio.worker import PollerBehaviorSimpleMaximum, WorkerConfig

# ---- worker options ------------------------------------------------------------------
# Activities are mostly I/O bound (calls to other services); 100 slots let a backlog drain
# in parallel while staying far below Lambda's 1,024 file descriptors / threads limits.
DEFAULT_MAX_CONCURRENT_ACTIVITIES: int = 100
# A workflow task holds its slot from the poll until its completion is acknowledged, i.e. at
# least two round trips to the server (a sticky poll waiting for its workflow's next task
# holds one too): with 0.25 s one-way latency a slot turns over about once a second. 150
# slots (mostly waiting on the network, not on Lambda's 1-2 vCPUs) drained 200 queued
# workflows (400 workflow tasks) in one 10 s invocation at that latency with the last one
# done ~7.7 s in; 100 slots ~8.5 s in (a few hundred ms before the worker stops), 50 slots
# 88 of 200. (Eager activities would save another ~1 s there, but stay off as in the
# reference, which always disables them in Lambda.)
DEFAULT_MAX_CONCURRENT_WORKFLOW_TASKS: int = 150
DEFAULT_MAX_CONCURRENT_LOCAL_ACTIVITIES: int = 50
DEFAULT_MAX_CONCURRENT_NEXUS_TASKS: int = 10
# Pollers: each poll is one long-poll RPC that brings one task per round trip, so over a
# slow link the poller count, not the CPU, caps throughput. 8 workflow pollers (of which
# the default 0.2 non-sticky ratio left 1 for new workflows) drained 30 of 200 queued
# workflows at 0.25 s one-way latency; 100 workflow / 50 activity pollers with half of
# the workflow pollers on the non-sticky queue drained 200 (1.0 starved the sticky queue:
# 5 of 200; autoscaling pollers: 22-26 of 200). Open long polls cost the server little.
DEFAULT_WORKFLOW_TASK_POLLER_BEHAVIOR = PollerBehaviorSimpleMaximum(maximum=100)
DEFAULT_ACTIVITY_TASK_POLLER_BEHAVIOR = PollerBehaviorSimpleMaximum(maximum=50)
DEFAULT_NONSTICKY_TO_STICKY_POLL_RATIO: float = 0.5
DEFAULT_NEXUS_TASK_POLLER_BEHAVIOR = PollerBehaviorSimpleMaximum(maximum=1)
# The cache only has to hold the workflows this invocation touches; evictions force a full
# history replay, so keep it larger than the concurrency above.
DEFAULT_MAX_CACHED_WORKFLOWS: int = 500
# In-flight activities get this long to finish when the deadline comes. An idle exit has
# nothing in flight, so this only costs time at the deadline; every second of it is a
# second less of work in each invocation.
DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT: timedelta = timedelta(seconds=1)

# ---- lifecycle -----------------------------------------------------------------------
# Shutdown hooks (telemetry flush, closing clients) share this budget.
DEFAULT_SHUTDOWN_HOOK_BUDGET: timedelta = timedelta(seconds=1)
# Worker shutdown beyond the graceful period (poll cancellation, final completions) plus
# returning from the handler; measured at 0.1-0.3 s on the dev server.
SHUTDOWN_MARGIN: timedelta = timedelta(milliseconds=500)
# The handler never plans to return later than this before the Lambda deadline.
RETURN_SAFETY: timedelta = timedelta(milliseconds=150)
# Return when no task has been running or received for this long, counted from when the
# server listed this worker's pollers, and the server then reports no backlog (None: run to
# the deadline).
DEFAULT_IDLE_TIMEOUT: timedelta | None = timedelta(seconds=1)
# A connection that takes longer than this is treated as failed (bounded by the deadline).
DEFAULT_CONNECT_TIMEOUT: timedelta = timedelta(seconds=5)
# Less work time than this is a configuration error, not a worker.
MIN_WORK_TIME: timedelta = timedelta(seconds=1)

# ---- logging -------------------------------------------------------------------------
#: The reference's logger namespace: each module here logs to ``<namespace>.<module>``
#: (``..._run_worker``, ``..._configure``, ``...otel`` are the reference's own names), so
#: logging configuration written for the reference (levels, handlers, filters on
#: ``temporalio`` or ``temporalio.contrib.aws.lambda_worker``) applies unchanged.
LOGGER_NAMESPACE = "temporalio.contrib.aws.lambda_worker"


def module_logger(module_name: str) -> logging.Logger:
    """The stdlib logger of one of this package's modules (``module_name``: its ``__name__``)."""
    return logging.getLogger(f"{LOGGER_NAMESPACE}.{module_name.rsplit('.', 1)[-1]}")


# ---- environment ---------------------------------------------------------------------
ENV_TASK_QUEUE = "TEMPORAL_TASK_QUEUE"
ENV_LAMBDA_TASK_ROOT = "LAMBDA_TASK_ROOT"
ENV_CONFIG_FILE = "TEMPORAL_CONFIG_FILE"
DEFAULT_CONFIG_FILE = "temporal.toml"


def apply_lambda_worker_defaults(config: WorkerConfig) -> None:
    """Fill in our defaults for keys absent from ``config``.

    ``disable_eager_activity_execution`` is always ``True``: an eager activity would run in
    the invocation that started the workflow, which may be about to return.
    """
    config.setdefault("max_concurrent_activities", DEFAULT_MAX_CONCURRENT_ACTIVITIES)
    config.setdefault("max_concurrent_workflow_tasks", DEFAULT_MAX_CONCURRENT_WORKFLOW_TASKS)
    config.setdefault(
        "max_concurrent_local_activities", DEFAULT_MAX_CONCURRENT_LOCAL_ACTIVITIES
    )
    config.setdefault("max_concurrent_nexus_tasks", DEFAULT_MAX_CONCURRENT_NEXUS_TASKS)
    config.setdefault("graceful_shutdown_timeout", DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT)
    config.setdefault("max_cached_workflows", DEFAULT_MAX_CACHED_WORKFLOWS)
    config.setdefault("workflow_task_poller_behavior", DEFAULT_WORKFLOW_TASK_POLLER_BEHAVIOR)
    config.setdefault("activity_task_poller_behavior", DEFAULT_ACTIVITY_TASK_POLLER_BEHAVIOR)
    config.setdefault("nexus_task_poller_behavior", DEFAULT_NEXUS_TASK_POLLER_BEHAVIOR)
    config.setdefault("nonsticky_to_sticky_poll_ratio", DEFAULT_NONSTICKY_TO_STICKY_POLL_RATIO)
    config["disable_eager_activity_execution"] = True


def build_lambda_identity(request_id: str | None, function_arn: str | None) -> str:
    """Worker identity ``<request_id>@<function_arn>`` (as the reference)."""
    return f"{request_id or 'unknown'}@{function_arn or 'unknown'}"


def lambda_default_config_file_path(
    getenv: Callable[[str], str | None] | Mapping[str, str] | None = None,
) -> Path:
    """The Temporal client config file for this environment (same signature and result as
    the reference when no file exists: ``getenv`` defaults to ``os.environ.get``).

    1. ``TEMPORAL_CONFIG_FILE`` if set (it must exist: :func:`load_client_profile` refuses a
       missing one);
    2. ``$LAMBDA_TASK_ROOT/temporal.toml`` if it exists;
    3. ``temporal.toml`` (relative to the working directory) if it exists; the reference's
       code skips this step when ``LAMBDA_TASK_ROOT`` is set, its docstring does not;
    4. otherwise the reference's answer (``$LAMBDA_TASK_ROOT/temporal.toml`` or
       ``temporal.toml``), a file that does not exist: environment variables only.

    It never calls ``Path.cwd()`` (forbidden in the workflow sandbox).
    """
    if getenv is None:
        getenv = os.environ.get
    elif isinstance(getenv, Mapping):
        getenv = getenv.get
    explicit = getenv(ENV_CONFIG_FILE)
    if explicit:
        return Path(explicit)
    root = getenv(ENV_LAMBDA_TASK_ROOT)
    in_root = Path(root or ".") / DEFAULT_CONFIG_FILE
    if in_root.is_file():
        return in_root
    here = Path(DEFAULT_CONFIG_FILE)
    if here.is_file():
        return here
    return in_root
