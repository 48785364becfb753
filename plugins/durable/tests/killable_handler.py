"""Handler used by test_kill.py; run by a subprocess that the test kills with SIGKILL."""

from __future__ import annotations

import json
import os
import sys
import time

from lambdarun_durable import DurableContext, StepContext, durable_execution
from lambdarun_durable.config import Duration, JitterStrategy, StepConfig, StepSemantics
from lambdarun_durable.retries import RetryStrategyConfig, create_retry_strategy

LOG = os.environ.get("_LAMBDARUN_DURABLE_TEST_LOG", "/dev/null")
STEPS = 12

CONFIG = StepConfig(
    step_semantics=StepSemantics.AT_MOST_ONCE_PER_RETRY,
    retry_strategy=create_retry_strategy(
        RetryStrategyConfig(max_attempts=3, initial_delay=Duration.from_seconds(1), jitter_strategy=JitterStrategy.NONE)
    ),
)


def _log(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@durable_execution
def handler(event: dict, ctx: DurableContext) -> int:
    total = 0
    for i in range(STEPS):

        def charge(sctx: StepContext, i: int = i) -> int:
            _log(f"start {i} {sctx.attempt} {os.getpid()}")
            time.sleep(float(event.get("pause", 0.05)))
            _log(f"done {i} {sctx.attempt} {os.getpid()}")
            return i

        total += ctx.step(charge, name=f"charge-{i}", config=CONFIG)
    return total


if __name__ == "__main__":
    print(json.dumps(handler(json.load(open(sys.argv[1])), None)), flush=True)
