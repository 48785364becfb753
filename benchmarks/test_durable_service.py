"""The same sequential-step handler, written with AWS's durable SDK, run (a) on the local
Lambda service's durable-execution API through boto3 ``Invoke`` (every checkpoint a
``CheckpointDurableExecution`` request committed in SQLite, WAL, synchronous=NORMAL, before the
service answers) and (b) on AWS's in-process test runner
(``aws-durable-execution-sdk-python-testing``, checkpoints in memory).

Full run:

    python -m pytest benchmarks/test_durable_service.py --full-bench --benchmark-enable \
        --import-mode=importlib -p no:cacheprovider

(c) lambdarun_durable's own handler on the same local durable API (a local-code function;
it checkpoints through CheckpointDurableExecution with the engine's default batching: a
step's record is sent at the next flush, not before the step returns, unless the step is
at-most-once).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local.testing import local_stack_fixture, make_zip

local_stack = local_stack_fixture(scope="module", idle_timeout=120)

REFERENCE_NAME = "aws-durable-execution-sdk-python-testing local runner"

SOURCE = '''
from aws_durable_execution_sdk_python import durable_execution

@durable_execution
def handler(event, context):
    total = 0
    for i in range(event["steps"]):
        total += context.step(lambda _, i=i: i, name="s")
    return total
'''


def _aws_sequential() -> Any:
    import aws_durable_execution_sdk_python as aws

    @aws.durable_execution
    def handler(event: dict, context: Any) -> int:
        total = 0
        for i in range(event["steps"]):
            total += context.step(lambda _, i=i: i, name="s")
        return total

    return handler


def aws_runner_seconds(steps: int, rounds: int) -> float:
    import aws_durable_execution_sdk_python_testing.runner as runner_mod

    fn = _aws_sequential()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        with runner_mod.DurableFunctionTestRunner(fn) as r:
            res = r.run(input=json.dumps({"steps": steps}), execution_timeout=600)
        samples.append(time.perf_counter() - start)
        assert json.loads(res.result) == sum(range(steps)), res
    return statistics.median(samples)


@pytest.fixture(scope="module")
def sdk_function(local_stack: Any) -> tuple[Any, str]:
    lam = local_stack.client("lambda")
    name = f"bench-sdk-{uuid.uuid4().hex[:6]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                        Handler="app.handler", Timeout=900, MemorySize=1024,
                        Code={"ZipFile": make_zip({"app.py": SOURCE})}, DurableConfig={"ExecutionTimeout": 3600})
    return lam, name


@pytest.mark.timeout(900)
def test_sdk_steps_on_the_local_durable_api(benchmark: Any, headline: Any, sdk_function: tuple[Any, str],
                                            bench_size: Any, full_bench: bool) -> None:
    lam, name = sdk_function
    steps = bench_size(1000, 20)

    def once() -> None:
        out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps({"steps": steps}))
        assert "FunctionError" not in out, out["Payload"].read()
        assert json.loads(out["Payload"].read()) == sum(range(steps))

    once()  # warm the environment (a cold start is not what this measures)
    benchmark.pedantic(once, rounds=3 if full_bench else 1, iterations=1)
    median = headline.median_s()
    ref_s = aws_runner_seconds(steps, rounds=3 if full_bench else 1)
    headline.set(f"durable API: {steps} SDK steps through Invoke (SQLite)",
                 None if median is None else steps / median, "steps/s", reference=steps / ref_s,
                 reference_name=REFERENCE_NAME, target=10 * steps / ref_s, target_op=">=", steps=steps,
                 note="every step's checkpoint is a CheckpointDurableExecution HTTP request persisted "
                      "(SQLite WAL, synchronous=NORMAL) before the step returns; the AWS runner keeps its "
                      "checkpoints in memory")


LAMBDARUN_SOURCE = '''
from lambdarun_durable import durable_execution


@durable_execution
def handler(event, ctx):
    total = 0
    for i in range(event["steps"]):
        total += ctx.step(lambda _, i=i: i, name="s")
    return total
'''


@pytest.mark.timeout(900)
def test_lambdarun_durable_steps_on_the_local_durable_api(benchmark: Any, headline: Any, local_stack: Any,
                                                          tmp_path: Path, bench_size: Any, full_bench: bool) -> None:
    import lambdarun
    import lambdarun_durable

    lam = local_stack.client("lambda")
    (tmp_path / "app.py").write_text(LAMBDARUN_SOURCE)
    name = f"bench-lrd-{uuid.uuid4().hex[:6]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                        Handler="app.handler", Timeout=900, MemorySize=1024,
                        Code={"S3Bucket": "__local__", "S3Key": str(tmp_path)},
                        Environment={"Variables": {"PYTHONPATH": os.pathsep.join(
                            str(Path(m.__file__).parent.parent) for m in (lambdarun_durable, lambdarun))}},
                        DurableConfig={"ExecutionTimeout": 3600})
    steps = bench_size(1000, 20)

    def once() -> None:
        out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps({"steps": steps}))
        assert "FunctionError" not in out, out["Payload"].read()
        assert json.loads(out["Payload"].read()) == sum(range(steps))

    once()
    benchmark.pedantic(once, rounds=3 if full_bench else 1, iterations=1)
    median = headline.median_s()
    ref_s = aws_runner_seconds(steps, rounds=3 if full_bench else 1)
    headline.set(f"durable API: {steps} lambdarun_durable steps through Invoke (SQLite)",
                 None if median is None else steps / median, "steps/s", reference=steps / ref_s,
                 reference_name=REFERENCE_NAME, target=10 * steps / ref_s, target_op=">=", steps=steps,
                 note="checkpoints batched by the engine's default (flushed at suspension/end, every 1 s "
                      "or 1000 records), each batch one CheckpointDurableExecution request")
