"""``[temporal]``: how the temporal backend reaches Temporal and runs its workers."""

from __future__ import annotations


from typing import Any

import attrs

from lambdarun.config import positive

__all__ = ["TemporalConfig", "DEFAULT_TASK_QUEUE"]

DEFAULT_TASK_QUEUE = "lambdarun"
#: upper bounds the worker function accepts in its event (see lambdarun_temporal.worker)
MAX_IDLE_TIMEOUT = 900.0
MAX_CONCURRENT_CALLS = 1000


def at_most(limit: float):
    """Validator: no more than ``limit`` (what the worker function accepts)."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and value > limit:
            raise ValueError(f"must be at most {limit:g} (the worker function refuses more)", attribute)

    return check


@attrs.define(kw_only=True)
class TemporalConfig:
    """``[temporal]`` in ``lambdarun.toml``; ``LAMBDARUN_TEMPORAL__<KEY>`` in the environment."""

    #: frontend ``host:port``; unset on the local target: a dev server is started on demand
    address: str | None = None
    namespace: str = "default"
    #: API key (Temporal Cloud); sent as a bearer token, implies TLS
    api_key: str | None = attrs.field(default=None, repr=False)
    #: connect with TLS (system roots)
    tls: bool = False
    #: task queue served by the worker function
    task_queue: str = DEFAULT_TASK_QUEUE
    #: worker deployment name / build id (worker versioning is always on)
    deployment_name: str = "lambdarun"
    build_id: str = "lambdarun-1"
    #: Lambda function running the workers (handler lambdarun.runtime.handler)
    function_name: str = "lambdarun-temporal-worker"
    #: Lambda timeout of the worker function, seconds (a worker lives at most this long)
    function_timeout: int = attrs.field(default=60, validator=positive)
    memory: int = attrs.field(default=1024, validator=positive)
    #: a worker returns after the queue was idle this long (seconds)
    idle_timeout: float = attrs.field(default=1.0, validator=[positive, at_most(MAX_IDLE_TIMEOUT)])
    #: worker invocations the controller keeps running at once while work is pending
    max_workers: int = attrs.field(default=1, validator=positive)
    #: calls one worker runs at once (threads)
    max_concurrent_calls: int = attrs.field(
        default=32, validator=[positive, at_most(MAX_CONCURRENT_CALLS)]
    )
    #: per-call time limit (seconds); default: the worker function's timeout minus its
    #: shutdown buffer
    timeout: float | None = attrs.field(default=None, validator=positive)
    #: attempts of a call cut short by the end of a worker invocation (its deadline); a
    #: call whose function raised is never retried
    attempts: int = attrs.field(default=3, validator=positive)
    #: store every call envelope in lambdarun storage instead of the Temporal payload
    #: (always done above 1.5 MB; the server refuses payloads over 2 MB)
    always_spill: bool = False
    #: seconds between controller checks for pending work with no live worker
    controller_interval: float = attrs.field(default=0.25, validator=positive)
    #: who invokes the worker function: ``"server"`` (Temporal's Serverless Workers: the
    #: server's worker controller assumes ``invoke_role_arn`` with ``external_id`` and
    #: Event-invokes the function), ``"client"`` (lambdarun's controller in the caller's
    #: process, the fallback for servers without the feature) or ``"auto"``: server on the
    #: dev server lambdarun starts for the local target, and on a configured server that
    #: reports the capability (``server_scaled_deployments``) when ``invoke_role_arn`` and
    #: ``external_id`` are set; client otherwise
    worker_controller: str = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "server", "client")))
    #: role the Temporal server assumes to invoke the worker function (server controller)
    invoke_role_arn: str | None = None
    #: External ID of that role's trust policy (server controller)
    external_id: str | None = attrs.field(default=None, repr=False)
    #: who ``lambdarun deploy`` lets assume the invoke role: the Temporal server's AWS
    #: account id or role ARN (Temporal Cloud tells you which), with ``external_id``
    temporal_principal: str | None = None
