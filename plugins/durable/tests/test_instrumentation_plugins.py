"""``durable_execution(plugins=...)``: AWS's instrumentation plugin interface, called as AWS's SDK calls it.

The same handler (steps, a step that fails once and is retried, a wait, a child context, a
map) runs on AWS's SDK + in-process runner (``aws_durable_execution_sdk_python_testing``) and
on lambdarun_durable + its runner, each with a recording plugin factory. Compared per
invocation: the invocation start/end infos, and for every operation the ordered hooks it
received (operation start/end, user function start/end) with their infos (type, subtype,
name, parent, replayed flag, status, attempt, outcome). Branches of a map run on threads, so
hooks of *different* operations interleave differently from run to run on both sides; the
order of one operation's hooks, and of the invocation hooks around them, does not.
``on_operation_change`` runs on its own thread and merges pending notifications (AWS's
``_ChangeDispatcher``), so its batching is timing-dependent on both sides: compared is the
last status each operation was reported with in each invocation.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from lambdarun.local.testing import local_stack_fixture

pytestmark = pytest.mark.timeout(300)

AWS = "aws_durable_execution_sdk_python"
OURS = "lambdarun_durable"

_FIELDS = (
    "operation_type",
    "sub_type",
    "name",
    "parent_id",
    "is_replayed",
    "status",
    "attempt",
    "outcome",
    "is_replay_children",
)
_HOOKS = (
    "on_invocation_start",
    "on_invocation_end",
    "on_operation_start",
    "on_operation_end",
    "on_operation_change",
    "on_user_function_start",
    "on_user_function_end",
)


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def recording_factory(pkg: str, calls: list[tuple[str, Any]], created: list[Any]) -> Any:
    """A plugin factory (AWS's protocol) whose plugins append ``(hook, info)`` to ``calls``."""
    plugin_mod = importlib.import_module(f"{pkg}.plugin")
    lock = threading.Lock()

    class Recorder(plugin_mod.DurableInstrumentationPlugin):
        pass

    def hook(name: str) -> Any:
        def record(self: Any, info: Any) -> None:
            with lock:
                calls.append((name, info))

        return record

    for name in _HOOKS:
        setattr(Recorder, name, hook(name))

    class Factory:
        def create_plugin(self, info: Any) -> Any:
            created.append(info)
            return Recorder()

    return Factory()


def build(pkg: str, plugins: list[Any]) -> Any:
    sdk = importlib.import_module(pkg)
    config = importlib.import_module(f"{pkg}.config")
    retries = importlib.import_module(f"{pkg}.retries")
    strategy = retries.create_retry_strategy(
        retries.RetryStrategyConfig(
            max_attempts=3, initial_delay=config.Duration.from_seconds(1), jitter_strategy=config.JitterStrategy.NONE
        )
    )
    tries: list[int] = []

    def flaky(step_ctx: Any) -> str:
        tries.append(step_ctx.attempt)
        if len(tries) < 2:
            raise ConnectionError("first try fails")
        return "ok"

    def failing_child(child: Any) -> Any:
        raise ValueError("child body fails")

    @sdk.durable_execution(plugins=plugins)
    def handler(event: Any, ctx: Any) -> Any:
        a = ctx.step(lambda s: event["n"], name="one")
        b = ctx.step(flaky, name="flaky", config=config.StepConfig(retry_strategy=strategy))
        ctx.wait(config.Duration.from_seconds(1), name="pause")
        c = ctx.run_in_child_context(lambda child: child.step(lambda s: 2, name="inner"), name="child")
        try:
            ctx.run_in_child_context(failing_child, name="bad-child")
        except Exception as e:  # noqa: BLE001 - the child's error is the handler's to catch
            d = type(e).__name__
        m = ctx.map([1, 2], lambda mctx, x, i, items: mctx.step(lambda s: x * 10, name=f"item{i}"), name="m")
        return [a, b, c, d, m.get_results()]

    return handler


def run(which: str, **runner_kw: Any) -> tuple[Any, list[tuple[str, Any]], list[Any]]:
    if which == "aws":
        from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as Runner

        pkg = AWS
    else:
        from lambdarun_durable.testing import DurableFunctionTestRunner as Runner

        pkg = OURS
    calls: list[tuple[str, Any]] = []
    created: list[Any] = []
    with Runner(build(pkg, [recording_factory(pkg, calls, created)]), **runner_kw) as runner:
        result = runner.run(input=json.dumps({"n": 1}), execution_timeout=120)
    return result, calls, created


def normalize(calls: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Per invocation: its start/end infos, each operation's ordered hooks, last change status."""
    invocations: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for hook, info in calls:
        if hook == "on_invocation_start":
            current = {
                "start": (
                    info.is_first_invocation,
                    info.execution_input,
                    sorted(info.updated_operations),
                    sorted((k, _value(v.status)) for k, v in info.operations.items() if _value(v.operation_type) != "EXECUTION"),
                ),
                "ops": defaultdict(list),
                "changes": {},
            }
            invocations.append(current)
            continue
        assert current is not None, f"{hook} before on_invocation_start"
        if hook == "on_invocation_end":
            current["end"] = (
                _value(info.status),
                info.execution_result,
                getattr(info.error, "type", None),
                sorted((k, _value(v.status)) for k, v in info.operations.items() if _value(v.operation_type) != "EXECUTION"),
            )
            current["ops"] = dict(current["ops"])
            current = None
        elif hook == "on_operation_change":
            for op_id, op in info.updated_operations.items():
                current["changes"][op_id] = _value(op.status)
        else:
            fields = {f: _value(getattr(info, f)) for f in _FIELDS if hasattr(info, f)}
            if info.error is not None:
                fields["error_type"] = info.error.type
            current["ops"][info.operation_id].append((hook, fields))
    assert current is None, "an invocation never received on_invocation_end"
    return invocations


def assert_same_hooks(aws_seq: list[dict[str, Any]], our_seq: list[dict[str, Any]]) -> None:
    assert len(our_seq) == len(aws_seq)
    for n, (theirs, ours) in enumerate(zip(aws_seq, our_seq, strict=True)):
        assert ours["start"] == theirs["start"], f"invocation {n} start"
        assert ours["end"] == theirs["end"], f"invocation {n} end"
        assert sorted(ours["ops"]) == sorted(theirs["ops"]), f"invocation {n}: operations with hooks"
        for op_id, hooks in theirs["ops"].items():
            assert ours["ops"][op_id] == hooks, f"invocation {n}, operation {hooks[0][1].get('name')}"
        assert ours["changes"] == theirs["changes"], f"invocation {n} changes"


@pytest.mark.parametrize("batching", [False, True], ids=["per-operation-commits", "checkpoint_batching"])
def test_plugin_hooks_match_aws_sdk_and_runner(batching: bool) -> None:
    aws_result, aws_calls, aws_created = run("aws")
    our_result, our_calls, our_created = run("ours", checkpoint_batching=batching)
    assert (our_result.status.value, json.loads(our_result.result)) == (
        aws_result.status.value,
        json.loads(aws_result.result),
    )
    assert json.loads(our_result.result) == [1, "ok", 2, "ChildContextError", [10, 20]]
    aws_seq, our_seq = normalize(aws_calls), normalize(our_calls)
    # one plugin per invocation, created from the start info its first hook receives
    assert len(aws_created) == len(aws_seq) == 3
    assert len(our_created) == len(our_seq)
    assert_same_hooks(aws_seq, our_seq)

    # the comparison above is not vacuous: the hooks AWS's SDK makes are there
    by_name = [{h[1].get("name"): [x[0] for x in hooks] for hooks in inv["ops"].values() for h in hooks[:1]} for inv in our_seq]
    assert by_name[0]["one"] == [
        "on_operation_start", "on_user_function_start", "on_user_function_end", "on_operation_end"
    ]
    assert by_name[0]["flaky"] == ["on_operation_start", "on_user_function_start", "on_user_function_end"]
    flaky_retry = next(hooks for hooks in our_seq[1]["ops"].values() if hooks[0][1].get("name") == "flaky")
    assert flaky_retry[0] == ("on_operation_start", flaky_retry[0][1]) and flaky_retry[0][1]["is_replayed"] is True
    assert [h[1]["attempt"] for h in flaky_retry if h[0].startswith("on_user_function")] == [2, 2]
    # the wait elapsed while the execution was suspended: an update, so its end hook opens invocation 3
    assert by_name[2]["pause"] == ["on_operation_end"]
    assert by_name[2]["bad-child"][-1] == "on_operation_end"
    bad = next(hooks for hooks in our_seq[2]["ops"].values() if hooks[0][1].get("name") == "bad-child")
    assert (bad[-1][1]["status"], bad[-1][1]["error_type"]) == ("FAILED", "ValueError")


def _handler_counting(pkg: str, plugins: list[Any], ran: list[str]) -> Any:
    sdk = importlib.import_module(pkg)

    @sdk.durable_execution(plugins=plugins)
    def handler(event: Any, ctx: Any) -> Any:
        def body(step_ctx: Any) -> int:
            ran.append("a")
            return 1

        a = ctx.step(body, name="a")
        b = ctx.run_in_child_context(lambda child: child.step(lambda s: ran.append("b") or 2, name="b"), name="c")
        event["mutated_by_handler"] = True
        return [a, b, sorted(event)]

    return handler


@pytest.mark.parametrize("pkg", [AWS, OURS])
def test_failing_and_hostile_plugins_change_nothing(pkg: str) -> None:
    """A factory that raises, a plugin raising in every hook, a plugin that mutates what it is
    given: the execution's result, its operations and how often each body ran are unchanged."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as AwsRunner

    from lambdarun_durable.testing import DurableFunctionTestRunner as OurRunner

    plugin_mod = importlib.import_module(f"{pkg}.plugin")
    hooks_called: list[str] = []

    class Raising(plugin_mod.DurableInstrumentationPlugin):
        pass

    def raising(name: str) -> Any:
        def hook(self: Any, info: Any) -> None:
            hooks_called.append(name)
            if name == "on_invocation_start":
                info.execution_input["injected"] = "by plugin"  # a copy: the handler never sees it
            for ops in (getattr(info, "operations", None), getattr(info, "updated_operations", None)):
                if ops:
                    ops.clear()
            raise RuntimeError(f"plugin fails in {name}")

        return hook

    for name in _HOOKS:
        setattr(Raising, name, raising(name))

    class RaisingFactory:
        def create_plugin(self, info: Any) -> Any:
            raise RuntimeError("factory fails")

    class NoneFactory:
        def create_plugin(self, info: Any) -> Any:
            return None

    class HostileFactory:
        def create_plugin(self, info: Any) -> Any:
            return Raising()

    runner_cls = AwsRunner if pkg == AWS else OurRunner
    outcomes = []
    for plugins in ([], [RaisingFactory(), NoneFactory(), HostileFactory()]):
        ran: list[str] = []
        with runner_cls(_handler_counting(pkg, plugins, ran)) as runner:
            result = runner.run(input=json.dumps({"k": 1}), execution_timeout=60)
        ops = sorted((op.name, op.status.value) for op in result.operations)
        outcomes.append((result.status.value, json.loads(result.result), ops, ran))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][1] == [1, 2, ["k", "mutated_by_handler"]]
    assert outcomes[1][3] == ["a", "b"]
    assert {"on_invocation_start", "on_operation_start", "on_user_function_start", "on_operation_end",
            "on_invocation_end"} <= set(hooks_called)


@pytest.mark.parametrize("pkg", [AWS, OURS])
def test_plugins_that_cannot_load_fail_at_decoration(pkg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration errors surface when the handler is defined, with AWS's exception and message."""
    sdk = importlib.import_module(pkg)
    exceptions = importlib.import_module(f"{pkg}.exceptions")
    with pytest.raises(exceptions.PluginLoadError, match=r"plugins\[0\] must be a plugin factory"):
        sdk.durable_execution(plugins=[object()])(lambda event, ctx: None)
    monkeypatch.setenv("DURABLE_EXECUTION_PLUGINS", "no-such-plugin")
    with pytest.raises(exceptions.PluginLoadError, match="No durable instrumentation plugin provider named 'no-such-plugin'"):
        sdk.durable_execution(lambda event, ctx: None)


def test_an_invocation_that_raises_ends_with_retry_as_in_aws() -> None:
    """An invocation that raises (a retryable InvocationError) still gives every started plugin
    its on_invocation_end, with status RETRY and the error; the retried invocation follows."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as AwsRunner

    from lambdarun_durable.testing import DurableFunctionTestRunner as OurRunner

    seqs = []
    for pkg, runner_cls in ((AWS, AwsRunner), (OURS, OurRunner)):
        sdk = importlib.import_module(pkg)
        exceptions = importlib.import_module(f"{pkg}.exceptions")
        calls: list[tuple[str, Any]] = []
        bodies: list[int] = []

        @sdk.durable_execution(plugins=[recording_factory(pkg, calls, [])])
        def handler(event: Any, ctx: Any) -> Any:
            a = ctx.step(lambda s: 1, name="a")
            bodies.append(a)
            if len(bodies) == 1:
                raise exceptions.InvocationError("transient")
            return a

        with runner_cls(handler) as runner:
            result = runner.run(input=json.dumps({}), execution_timeout=60)
        assert (result.status.value, result.result) == ("SUCCEEDED", "1")
        seqs.append(normalize(calls))
    assert [inv["end"][0] for inv in seqs[1]] == ["RETRY", "SUCCEEDED"]
    # errors the SDK defines carry its wire names on both sides
    assert seqs[1][0]["end"][2] == "aws_durable_execution_sdk_python.exceptions.InvocationError"
    assert_same_hooks(*seqs)


def build_concurrent(pkg: str, plugins: list[Any]) -> Any:
    sdk = importlib.import_module(pkg)
    config = importlib.import_module(f"{pkg}.config")
    waits = importlib.import_module(f"{pkg}.waits")
    strategy = waits.create_wait_strategy(
        waits.WaitStrategyConfig(
            should_continue_polling=lambda state: state < 2,
            max_attempts=5,
            initial_delay=config.Duration.from_seconds(1),
            jitter_strategy=config.JitterStrategy.NONE,
        )
    )

    @sdk.durable_execution(plugins=plugins)
    def handler(event: Any, ctx: Any) -> Any:
        p = ctx.parallel([lambda c: c.step(lambda s: "x", name="px"), lambda c: 5], name="par")
        w = ctx.wait_for_condition(
            lambda state, check_ctx: state + 1,
            config=waits.WaitForConditionConfig(wait_strategy=strategy, initial_state=0),
            name="cond",
        )
        v = ctx.run_in_child_context(
            lambda c: c.step(lambda s: 3, name="vs"), name="virt", config=config.ChildConfig(is_virtual=True)
        )
        return [p.get_results(), w, v]

    return handler


def test_parallel_wait_for_condition_and_virtual_child_match_aws() -> None:
    """Parallel branches, a polled condition (user function hooks per check, its attempts) and a
    virtual child context (no checkpoint: AWS's child-context end hook) give the same hooks."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as AwsRunner

    from lambdarun_durable.testing import DurableFunctionTestRunner as OurRunner

    seqs = []
    for pkg, runner_cls in ((AWS, AwsRunner), (OURS, OurRunner)):
        calls: list[tuple[str, Any]] = []
        with runner_cls(build_concurrent(pkg, [recording_factory(pkg, calls, [])])) as runner:
            result = runner.run(input=json.dumps({}), execution_timeout=60)
        assert (result.status.value, json.loads(result.result)) == ("SUCCEEDED", [["x", 5], 2, 3])
        seqs.append(normalize(calls))
    assert len(seqs[1]) == 2  # the condition is polled again after its 1 s delay
    virt = [hooks for hooks in seqs[1][1]["ops"].values() if hooks[0][1].get("name") == "virt"]
    assert [h[0] for h in virt[0]] == ["on_user_function_start", "on_user_function_end", "on_operation_end"]
    assert_same_hooks(*seqs)


def build_callbacks(pkg: str, plugins: list[Any]) -> Any:
    sdk = importlib.import_module(pkg)
    config = importlib.import_module(f"{pkg}.config")

    @sdk.durable_execution(plugins=plugins)
    def handler(event: Any, ctx: Any) -> Any:
        callback = ctx.create_callback(
            name="approval", config=config.CallbackConfig(timeout=config.Duration.from_seconds(60))
        )
        a = callback.result()
        b = ctx.wait_for_callback(
            lambda callback_id, wait_ctx: None,
            name="submit",
            config=config.WaitForCallbackConfig(timeout=config.Duration.from_seconds(60)),
        )
        return [a, b]

    return handler


def _answer_next_callback(runner: Any, arn: str, answered: set[str], result: bytes) -> None:
    """Wait (deadline 60 s) for a callback not answered yet, then answer it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        callback_id = runner.wait_for_callback(execution_arn=arn)
        if callback_id not in answered:
            answered.add(callback_id)
            runner.send_callback_success(callback_id=callback_id, result=result)
            return
        time.sleep(0.05)
    raise AssertionError("no new callback within 60 s")


def test_callbacks_match_aws() -> None:
    """create_callback and wait_for_callback (its child context, the submitter's user function
    hooks, the callback's end once it is answered) give the same hooks as on AWS's runner.

    One documented difference: the invocation after a callback was answered lists the callback
    in ``updated_operations``, as AWS documents for its service ("a callback that was
    delivered", ``InvocationStartInfo.updated_operations``); AWS's in-process runner records
    only elapsed waits, due retries and completed chained invokes there."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as AwsRunner

    from lambdarun_durable.testing import DurableFunctionTestRunner as OurRunner

    seqs = []
    for pkg, runner_cls in ((AWS, AwsRunner), (OURS, OurRunner)):
        calls: list[tuple[str, Any]] = []
        answered: set[str] = set()
        with runner_cls(build_callbacks(pkg, [recording_factory(pkg, calls, [])])) as runner:
            arn = runner.run_async(input=None, timeout=60)
            _answer_next_callback(runner, arn, answered, b'"yes"')
            _answer_next_callback(runner, arn, answered, b'"done"')
            result = runner.wait_for_result(execution_arn=arn)
        assert (result.status.value, json.loads(result.result)) == ("SUCCEEDED", ['"yes"', '"done"'])
        seqs.append(normalize(calls))
    aws_seq, our_seq = seqs
    assert len(our_seq) == 3
    callback_ops = {
        op_id for inv in our_seq for op_id, hooks in inv["ops"].items() if hooks[0][1]["operation_type"] == "CALLBACK"
    }
    assert len(callback_ops) == 2
    for inv in our_seq[1:]:
        first, inputs, updated, operations = inv["start"]
        assert len(updated) == 1 and set(updated) <= callback_ops
        inv["start"] = (first, inputs, [], operations)
    assert [inv["start"][2] for inv in aws_seq] == [[], [], []]
    assert_same_hooks(aws_seq, our_seq)


def test_chained_invoke_matches_aws() -> None:
    """``context.invoke``: its START before the checkpoint, suspension, then (the invoke having
    completed while suspended, so listed in ``updated_operations``) its end hook on replay."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as AwsRunner

    from lambdarun_durable.testing import DurableFunctionTestRunner as OurRunner

    seqs = []
    for pkg, runner_cls in ((AWS, AwsRunner), (OURS, OurRunner)):
        sdk = importlib.import_module(pkg)
        calls: list[tuple[str, Any]] = []

        @sdk.durable_execution(plugins=[recording_factory(pkg, calls, [])])
        def handler(event: Any, ctx: Any) -> Any:
            return ctx.invoke("adder", {"x": 2}, name="call-adder")

        with runner_cls(handler) as runner:
            runner.register_function("adder", lambda event, lambda_ctx: event["x"] + 1)
            result = runner.run(input=json.dumps({}), execution_timeout=60)
        assert (result.status.value, json.loads(result.result)) == ("SUCCEEDED", 3)
        seqs.append(normalize(calls))
    assert len(seqs[1]) == 2
    (invoke_id,) = seqs[1][1]["start"][2]
    assert [h[0] for h in seqs[1][1]["ops"][invoke_id]] == ["on_operation_end"]
    assert_same_hooks(*seqs)


# --- on the real local target: the plugin runs inside the Lambda workers ----------------------


class FileRecordingFactory:
    """Appends one JSON line per hook (hook, operation name, status, pid) to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def create_plugin(self, info: Any) -> Any:
        import lambdarun_durable.plugin as plugin_mod

        path = self.path

        class FilePlugin(plugin_mod.DurableInstrumentationPlugin):
            pass

        def hook(name: str) -> Any:
            def record(self: Any, info: Any) -> None:
                import os

                line = {"hook": name, "name": getattr(info, "name", None), "pid": os.getpid(),
                        "status": _value(getattr(info, "status", None))}
                with open(path, "a") as f:
                    f.write(json.dumps(line) + "\n")

            return record

        for name in _HOOKS:
            if name != "on_operation_change":
                setattr(FilePlugin, name, hook(name))
        return FilePlugin()


local_stack = local_stack_fixture(scope="module")


def _session_plugins() -> list[Any]:
    import lambdarun_durable.plugin
    from lambdarun.plugins import DEFAULT_PLUGINS

    out: list[Any] = [lambdarun_durable.plugin]
    if "lambdarun.local.plugin" not in DEFAULT_PLUGINS:
        from lambdarun.local import plugin as local_plugin

        out.append(local_plugin)
    return out


def test_plugins_run_inside_the_local_lambda_workers(lambdarun_session: Any, local_stack: Any, tmp_path: Any) -> None:
    """``lambdarun.run(handler, backend="durable")`` on the local target: the plugin the handler
    was decorated with runs in the Lambda worker of each invocation and sees the wait elapse
    as an update (the service's invocation event carries ``UpdatedOperationIds``)."""
    import os

    import lambdarun
    from lambdarun_durable.config import Duration

    hooks_file = tmp_path / "hooks.jsonl"

    @importlib.import_module(OURS).durable_execution(plugins=[FileRecordingFactory(str(hooks_file))])
    def workflow(event: dict, ctx: Any) -> int:
        first = ctx.step(lambda s: event["n"] * 2, name="first")
        ctx.wait(Duration.from_seconds(1), name="cool down")
        return ctx.step(lambda s: first + 1, name="second")

    session = lambdarun_session(
        *_session_plugins(),
        overrides={
            "target": "local",
            "local": {"state_dir": str(local_stack.state_dir)},
            "progress": False,
            "durable": {"function_name": "lambdarun-durable-plugin-tests", "store_url": f"sqlite:///{tmp_path}/durable.db"},
        },
    )
    assert lambdarun.run(workflow, {"n": 5}, backend="durable", session=session) == 11
    lines = [json.loads(line) for line in hooks_file.read_text().splitlines()]
    assert os.getpid() not in {line["pid"] for line in lines}  # the hooks ran in the Lambda workers
    seen = [(line["hook"], line["name"], line["status"]) for line in lines]
    assert seen == [
        ("on_invocation_start", None, None),
        ("on_operation_start", "first", "STARTED"),
        ("on_user_function_start", "first", "STARTED"),
        ("on_user_function_end", "first", "STARTED"),
        ("on_operation_end", "first", "SUCCEEDED"),
        ("on_operation_start", "cool down", "STARTED"),
        ("on_invocation_end", None, "PENDING"),
        ("on_invocation_start", None, None),
        ("on_operation_end", "cool down", "SUCCEEDED"),
        ("on_operation_start", "second", "STARTED"),
        ("on_user_function_start", "second", "STARTED"),
        ("on_user_function_end", "second", "STARTED"),
        ("on_operation_end", "second", "SUCCEEDED"),
        ("on_invocation_end", None, "SUCCEEDED"),
    ]
