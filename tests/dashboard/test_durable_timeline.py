"""The durable page's timeline, folded from real histories (the durable plugin's in-process
test runner: the real engine and SQLite store, with a virtual clock)."""

from __future__ import annotations

from typing import Any

from lambdarun_durable import DurableContext, StepContext, durable_execution
from lambdarun_durable.config import Duration, JitterStrategy, StepConfig
from lambdarun_durable.dashboard import build_timeline
from lambdarun_durable.retries import RetryStrategyConfig, create_retry_strategy
from lambdarun_durable.testing import DurableFunctionTestRunner

_TWICE = StepConfig(
    retry_strategy=create_retry_strategy(
        RetryStrategyConfig(max_attempts=2, initial_delay=Duration.from_seconds(30), jitter_strategy=JitterStrategy.NONE)
    )
)


@durable_execution
def fan_out(event: dict, ctx: DurableContext) -> Any:
    ctx.wait(Duration.from_hours(1), name="nightly")
    shipped = ctx.map(event["items"], lambda child, item, i, items: child.step(lambda _: item * 2, name=f"ship {item}"),
                      name="ship all")
    approval = ctx.create_callback(name="approval")
    if approval.result() != "yes":

        def never(step_ctx: StepContext) -> None:
            raise RuntimeError("refused by the approver")

        ctx.step(never, name="give up", config=_TWICE)
    return shipped.get_results()


def test_timeline_nests_children_and_follows_callbacks_and_retries() -> None:
    with DurableFunctionTestRunner(fan_out) as runner:
        arn = runner.run_async({"items": [1, 2]})
        callback_id = runner.wait_for_callback(arn, name="approval")
        waiting = build_timeline(runner.get_execution_history(arn)["Events"])
        assert waiting.status == "RUNNING" and waiting.ended is None
        (pending,) = waiting.pending_callbacks
        assert pending.name == "approval" and pending.details["CallbackId"] == callback_id

        runner.send_callback_success(callback_id, "no")
        result = runner.wait_for_result(arn)
        timeline = build_timeline(runner.get_execution_history(arn)["Events"])

    assert result.error is not None
    assert timeline.status == "FAILED" and timeline.ended is not None
    assert "refused by the approver" in (timeline.error or "")
    assert timeline.pending_callbacks == []
    by_name = {op.name: op for op in timeline.operations}
    # the wait: an hour on the (virtual) clock, succeeded
    nightly = by_name["nightly"]
    assert (nightly.kind, nightly.status) == ("Wait", "SUCCEEDED")
    assert (nightly.ended - nightly.started).total_seconds() >= 3600
    # the map is a context; its items are child contexts holding their steps, right below it
    ship_all = by_name["ship all"]
    assert ship_all.kind == "Context" and ship_all.subtype == "Map" and ship_all.depth == 0
    names = [op.name for op in timeline.operations]
    children = [op for op in timeline.operations if op.parent_id == ship_all.id]
    assert len(children) == 2 and all(c.depth == 1 for c in children)
    for item in (1, 2):
        step = by_name[f"ship {item}"]
        assert step.depth == 2 and step.result == str(item * 2)
        assert names.index("ship all") < names.index(f"ship {item}")
    # the callback's result, and the step that failed on both attempts
    assert by_name["approval"].status == "SUCCEEDED" and by_name["approval"].result == "no"  # as sent: not JSON, shown as is
    give_up = by_name["give up"]
    assert give_up.status == "FAILED" and give_up.retries == 1
    assert [a.outcome for a in give_up.attempts] == ["FAILED", "FAILED"]
    assert give_up.attempts[0].retry == {"CurrentAttempt": 1, "NextAttemptDelaySeconds": 30}
    assert "RuntimeError: refused by the approver" in (give_up.attempts[0].error or "")
    # every bar lies on the execution's axis, in start order
    assert all(0 <= op.left <= 100 and 0 < op.width <= 100 - op.left + 1e-9 for op in timeline.operations)
    assert nightly.width > 90  # the hour dominates the execution
