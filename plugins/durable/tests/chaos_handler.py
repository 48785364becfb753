"""Handler and driver of the chaos tests (test_chaos_*.py).

``handler`` runs ``event["steps"]`` steps; each appends ``start STEP ATTEMPT PID`` and
``done STEP ATTEMPT PID`` to the side-effect file ``event["log"]``. Run as a script, this
module is a driver process (an orchestrator invoking the handler in-process, so SIGKILL
ends the driver and its invocation together)::

    python chaos_handler.py STORE_SPEC ARN TTL HEARTBEAT
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from lambdarun_durable import DurableContext, StepContext, durable_execution
from lambdarun_durable.config import Duration, JitterStrategy, StepConfig, StepSemantics
from lambdarun_durable.execution import DurableInvocationInput
from lambdarun_durable.retries import RetryStrategyConfig, create_retry_strategy

RETRY = create_retry_strategy(
    RetryStrategyConfig(max_attempts=3, initial_delay=Duration.from_seconds(1), jitter_strategy=JitterStrategy.NONE)
)
CONFIGS = {
    "at_most_once": StepConfig(step_semantics=StepSemantics.AT_MOST_ONCE_PER_RETRY, retry_strategy=RETRY),
    "at_least_once": StepConfig(step_semantics=StepSemantics.AT_LEAST_ONCE_PER_RETRY, retry_strategy=RETRY),
}


def _log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@durable_execution
def handler(event: dict, ctx: DurableContext) -> int:
    total = 0
    config = CONFIGS[event.get("semantics", "at_most_once")]
    for i in range(int(event.get("steps", 10))):

        def charge(sctx: StepContext, i: int = i) -> int:
            _log(event["log"], f"start {i} {sctx.attempt} {os.getpid()}")
            time.sleep(float(event.get("pause", 0.05)))
            _log(event["log"], f"done {i} {sctx.attempt} {os.getpid()}")
            return i

        total += ctx.step(charge, name=f"charge-{i}", config=config)
    return total


def in_process_invoke(store: Any) -> Any:
    """An ``invoke`` for Orchestrator that runs the handler here, on ``store``."""

    def invoke(_name: str, event: dict[str, Any]) -> dict[str, Any]:
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        return handler(inv, None)

    return invoke


def open_spec(spec: dict[str, Any]) -> Any:
    """A store from a JSON-able spec (so a driver subprocess opens the test's store)."""
    import boto3

    from lambdarun_durable.stores import DynamoDBCheckpointStore, S3CheckpointStore, SQLiteCheckpointStore

    if spec["kind"] == "sqlite":
        return SQLiteCheckpointStore(spec["path"])
    client = boto3.client(
        spec["kind"], endpoint_url=spec["endpoint"], region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    if spec["kind"] == "dynamodb":
        return DynamoDBCheckpointStore(spec["table"], client, create_table=False)
    return S3CheckpointStore(spec["bucket"], spec["prefix"], client)


if __name__ == "__main__":
    from lambdarun_durable.lease import LeasePolicy
    from lambdarun_durable.orchestrator import Orchestrator
    from lambdarun_durable.service import DurableService

    store = open_spec(json.loads(sys.argv[1]))
    arn, ttl, heartbeat = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    orchestrator = Orchestrator(
        DurableService(store), in_process_invoke(store), lease=LeasePolicy(ttl=ttl, heartbeat=heartbeat)
    )
    print(json.dumps(orchestrator.run("fn", arn)), flush=True)
