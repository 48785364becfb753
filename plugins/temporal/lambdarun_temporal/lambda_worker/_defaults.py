"""Lambda-tuned defaults for the Temporal worker, and where each number comes from.

The reference (``temporalio.contrib.aws.lambda_worker`` 1.35.0) finished 40-64 of 200 queued
workflows in one 10 s invocation: it starts shutting down 7 s before the deadline (so only
~3 s of a 10 s function does work), polls with 2 workflow / 1 activity pollers and runs 2
activities at a time. Our defaults are chosen for a worker that lives for *one invocation*
and should drain a backlog quickly, then leave (see ``README.md`` for the measurements).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from temporalio.worker import PollerBehaviorSimpleMaximum, WorkerConfig

# ---- worker options ------------------------------------------------------------------
# Activities are mostly I/O bound (calls to other services); 100 slots let a backlog drain
# in parallel while staying far below Lambda's 1,024 file descriptors / threads limits.
DEFAULT_MAX_CONCURRENT_ACTIVITIES: int = 100
# Workflow tasks are CPU-bound Python; more than a few dozen in flight only adds queueing
# on Lambda's 1-2 vCPUs, but enough are needed to keep the pollers' results flowing.
DEFAULT_MAX_CONCURRENT_WORKFLOW_TASKS: int = 50
DEFAULT_MAX_CONCURRENT_LOCAL_ACTIVITIES: int = 50
DEFAULT_MAX_CONCURRENT_NEXUS_TASKS: int = 10
# Pollers: each poll is one long-poll RPC; 2/1 (reference) caps dispatch at a few tasks per
# round trip. 8 of each drains a backlog at the speed the CPU allows.
DEFAULT_WORKFLOW_TASK_POLLER_BEHAVIOR = PollerBehaviorSimpleMaximum(maximum=8)
DEFAULT_ACTIVITY_TASK_POLLER_BEHAVIOR = PollerBehaviorSimpleMaximum(maximum=8)
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
# Return when no task has been running or received for this long (None: run to deadline).
DEFAULT_IDLE_TIMEOUT: timedelta | None = timedelta(seconds=1)
# A connection that takes longer than this is treated as failed (bounded by the deadline).
DEFAULT_CONNECT_TIMEOUT: timedelta = timedelta(seconds=5)
# Less work time than this is a configuration error, not a worker.
MIN_WORK_TIME: timedelta = timedelta(seconds=1)

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
    config["disable_eager_activity_execution"] = True


def build_lambda_identity(request_id: str | None, function_arn: str | None) -> str:
    """Worker identity ``<request_id>@<function_arn>`` (as the reference)."""
    return f"{request_id or 'unknown'}@{function_arn or 'unknown'}"


def lambda_default_config_file_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The Temporal client config file for this environment, or None when there is none.

    Resolution order (as documented by the reference, whose code skips step 3 when
    ``LAMBDA_TASK_ROOT`` is set):

    1. ``TEMPORAL_CONFIG_FILE`` if set (it must exist: a missing file is an error);
    2. ``$LAMBDA_TASK_ROOT/temporal.toml`` if it exists;
    3. ``./temporal.toml`` if it exists.
    """
    env = os.environ if env is None else env
    explicit = env.get(ENV_CONFIG_FILE)
    if explicit:
        return Path(explicit)
    root = env.get(ENV_LAMBDA_TASK_ROOT)
    if root:
        candidate = Path(root) / DEFAULT_CONFIG_FILE
        if candidate.is_file():
            return candidate
    candidate = Path.cwd() / DEFAULT_CONFIG_FILE
    if candidate.is_file():
        return candidate
    return None
