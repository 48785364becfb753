"""The plugin's ``[durable]`` configuration section (``lambdarun.toml`` /
``LAMBDARUN_DURABLE__*``), and the AWS durable SDK's configuration types.

Like the other plugins, ``config.py`` holds the plugin's section (:class:`DurableConfig`).
This module is also ``aws_durable_execution_sdk_python.config`` under lambdarun's name, so
code ported from the SDK imports ``Duration``, ``StepConfig``, ``CompletionConfig``, ... from
here: they live in :mod:`lambdarun_durable.operation_config` (per-operation configs) and
:mod:`lambdarun_durable.completion` (when a batch completes) and are re-exported below.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from lambdarun.config import non_negative, positive

from lambdarun_durable.completion import (  # noqa: F401 - the SDK's import path
    BatchItemStatus,
    CompletionConfig,
    CompletionDecision,
    CompletionItemStatus,
    CompletionOutcome,
    CompletionStatus,
    complete_batch,
    continue_batch,
)
from lambdarun_durable.lease import LeasePolicy
from lambdarun_durable.operation_config import (  # noqa: F401 - the SDK's import path
    CallbackConfig,
    ChildConfig,
    Duration,
    InvokeConfig,
    JitterStrategy,
    MapConfig,
    NestingType,
    Numeric,
    ParallelBranch,
    ParallelConfig,
    StepConfig,
    StepSemantics,
    WaitForCallbackConfig,
)


def default_state_dir() -> str:
    """``$XDG_CACHE_HOME/lambdarun/durable`` (``~/.cache/lambdarun/durable``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return str(Path(base) / "lambdarun" / "durable")


@attrs.define(kw_only=True)
class DurableConfig:
    """``[durable]``: where executions are stored and how the orchestrator drives them."""

    #: checkpoint store: sqlite:///rel.db, sqlite:////abs.db, dynamodb://table, s3://bucket/prefix;
    #: default: sqlite in state_dir
    store_url: str | None = None
    #: directory of the default SQLite store
    state_dir: str = attrs.field(factory=default_state_dir)
    #: False (default, as AWS's SDK): each operation's outcome (a step's result, ...) is
    #: committed to the store before the operation returns. True: checkpoints are batched
    #: (batch_records / batch_age, and before anything is reported or an at-most-once step
    #: runs); steps finished since the last write run again if the invocation dies
    checkpoint_batching: bool = False
    #: with checkpoint_batching: records buffered before a checkpoint write is forced
    batch_records: int = attrs.field(default=1000, validator=positive)
    #: with checkpoint_batching: seconds a buffered record may wait before a write is forced
    batch_age: float = attrs.field(default=1.0, validator=positive)
    #: the Lambda function running durable handlers; default: the core function_name
    function_name: str | None = None
    #: "module:function" of the durable handler a deployed function runs for plain AWS events
    handler: str | None = None
    #: Lambda timeout (seconds) of the function the backend creates
    timeout: int = attrs.field(default=900, validator=positive)
    #: Lambda memory (MB) of the function the backend creates
    memory: int = attrs.field(default=1024, validator=positive)
    #: execution timeout (seconds); none by default
    execution_timeout: int | None = attrs.field(default=None, validator=positive)
    #: where executions run: "auto" (on the target's durable-execution API when its Lambda
    #: service has one: the local service and AWS do; else the in-process orchestrator),
    #: "api" (always the API) or "orchestrator" (always the in-process orchestrator)
    api: str = attrs.field(default="auto", validator=attrs.validators.in_(("auto", "api", "orchestrator")))
    #: retries of an invocation that failed (crash, timeout) before the execution fails
    max_invocation_retries: int = attrs.field(default=3, validator=positive)
    #: deprecated and ignored: an execution waiting for a callback now polls its store on
    #: the session's poller, whose backoff the ``[polling]`` section sets; kept so existing
    #: configuration files still load
    poll_interval: float = attrs.field(default=0.2, validator=positive)
    #: seconds a driver's lease on an execution lives without a heartbeat (a dead driver's
    #: execution can be resumed by another one after this)
    lease_ttl: float = attrs.field(default=30.0, validator=positive)
    #: seconds between a driver's lease heartbeats; at most lease_ttl / 3
    lease_heartbeat: float = attrs.field(default=5.0, validator=positive)
    #: seconds a second driver waits for the lease before LeaseHeldError (0: fail at once)
    lease_wait: float = attrs.field(default=0.0, validator=non_negative)

    def __attrs_post_init__(self) -> None:
        if self.lease_heartbeat * 3 > self.lease_ttl * (1 + 1e-9):
            raise ValueError(
                f"must be at most a third of durable.lease_ttl ({self.lease_ttl} s), "
                "so one slow heartbeat never loses the lease",
                attrs.fields(DurableConfig).lease_heartbeat,
            )

    def lease_policy(self, wait: float | None = None) -> LeasePolicy:
        """The driver's lease policy; ``wait`` overrides ``lease_wait``."""
        return LeasePolicy(
            ttl=self.lease_ttl, heartbeat=self.lease_heartbeat, wait=self.lease_wait if wait is None else wait
        )

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        path = os.path.abspath(os.path.join(self.state_dir, "durable.db"))
        return f"sqlite:///{path}"  # absolute: sqlite:////abs/durable.db
