"""Step attempt numbers after retries equal AWS's: the same handler on AWS's SDK + runner and ours.

The step fails twice, then succeeds. Compared: the attempt each try sees in its
StepContext, the ``attempt`` its logger reports, the attempt numbers in the history's
retry details, and the finished operation's ``attempt`` in the test result.
"""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "trying":
            self.attempts.append(getattr(record, "attempt", None))


def build(pkg: str, seen: list[int], logger_name: str) -> Any:
    sdk = importlib.import_module(pkg)
    config = importlib.import_module(f"{pkg}.config")
    retries = importlib.import_module(f"{pkg}.retries")
    strategy = retries.create_retry_strategy(
        retries.RetryStrategyConfig(
            max_attempts=5, initial_delay=config.Duration.from_seconds(1), jitter_strategy=config.JitterStrategy.NONE
        )
    )

    def flaky(sctx: Any) -> str:
        seen.append(sctx.attempt)
        sctx.logger.info("trying")
        if len(seen) < 3:
            raise ConnectionError(f"try {len(seen)}")
        return "ok"

    @sdk.durable_execution
    def handler(event: Any, ctx: Any) -> str:
        ctx.set_logger(logging.getLogger(logger_name)) if hasattr(ctx, "set_logger") else None
        return ctx.step(flaky, name="flaky", config=config.StepConfig(retry_strategy=strategy))

    return handler


def _retry_attempts(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    out = []
    for e in events:
        if e["EventType"].startswith("Step"):
            details = next((v for k, v in e.items() if k.endswith("Details")), {}) or {}
            out.append((e["EventType"], (details.get("RetryDetails") or {}).get("CurrentAttempt")))
    return out


def test_attempt_numbers_match_aws_after_retries() -> None:
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as AwsRunner

    from lambdarun_durable.testing import DurableFunctionTestRunner

    results: dict[str, Any] = {}
    for name, pkg, runner_cls in (
        ("aws", "aws_durable_execution_sdk_python", AwsRunner),
        ("ours", "lambdarun_durable", DurableFunctionTestRunner),
    ):
        seen: list[int] = []
        capture = _Capture()
        log = logging.getLogger(f"attempts.{name}")
        log.addHandler(capture)
        log.setLevel(logging.INFO)
        log.propagate = False
        try:
            with runner_cls(build(pkg, seen, f"attempts.{name}")) as runner:
                result = runner.run(input=json.dumps({}), execution_timeout=600)
                if name == "aws":
                    (execution,) = runner._store.list_all()  # noqa: SLF001 - AWS runner's own store
                    events = [
                        ev.to_dict()
                        for ev in runner.get_execution_history(execution.durable_execution_arn, include_execution_data=True).events
                    ]
                else:
                    events = result.history
        finally:
            log.removeHandler(capture)
        results[name] = {
            "status": result.status.value,
            "result": json.loads(result.result),
            "context": seen,
            "logger": capture.attempts,
            "history": _retry_attempts(events),
            "operation": result.get_step("flaky").attempt,
        }
    assert results["ours"]["context"] == [1, 2, 3]
    for key in results["aws"]:
        assert (key, results["ours"][key]) == (key, results["aws"][key])
