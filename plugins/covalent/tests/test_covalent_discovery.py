"""With Covalent installed (the test extra installs it), the executor is found through
Covalent's own plugin discovery and runs a task the way Covalent's dispatcher drives an
async executor."""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

import cloudpickle
import covalent
import pytest
from covalent._workflow.transport import TransportableObject
from covalent.executor import _executor_manager
from covalent.executor.utils import Signals
from covalent.executor.utils.wrappers import wrapper_fn

from lambdarun.errors import TaskTimeoutError
from lambdarun.session import set_session
from lambdarun_covalent.executor import AWSLambdaExecutor

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def multiply(a, b):
    print(f"multiplying {a} by {b}")
    return a * b


class ElectronError(KeyError):
    pass


def broken(x):
    print("about to break")
    raise ElectronError(x)


def sleepy(seconds):
    import time

    time.sleep(seconds)
    return seconds


@pytest.fixture
def default_session(session: Any) -> Any:
    """Covalent builds executors itself: they use lambdarun's default session, ours here."""
    previous = set_session(session)
    yield session
    set_session(previous)


def test_covalent_finds_the_executor_by_short_name():
    assert "awslambda" in _executor_manager.list_executors(print_names=False)
    assert _executor_manager.executor_plugins_map["awslambda"] is AWSLambdaExecutor
    executor = _executor_manager.get_executor("awslambda")
    assert isinstance(executor, AWSLambdaExecutor)
    assert executor.function_name == "covalent-awslambda-executor"
    assert covalent.get_config("executors.awslambda.timeout") == 900


async def _dispatch(executor: Any, function: Any, args: list, results_dir: str) -> tuple:
    """What covalent_dispatcher does for one node: rebuild the executor from its JSON, start
    its runtime, answer its messages (executor_proxy.watch) and call ``_execute``."""
    messages: list[tuple[Any, Any]] = []
    rebuilt = _executor_manager.get_executor(executor.to_dict()["short_name"])
    rebuilt.from_dict(executor.to_dict())
    rebuilt._init_runtime(loop=asyncio.get_running_loop(), cancel_pool=None)

    async def watch() -> None:
        while True:
            action, body = await rebuilt._send_queue.get()
            if action == Signals.EXIT:
                return
            messages.append((action, body))
            answer = False if body == "cancel_requested" else None
            rebuilt._recv_queue.put_nowait((True, answer))

    listener = asyncio.create_task(watch())
    call = functools.partial(wrapper_fn, TransportableObject(function), [], [])
    result = await rebuilt._execute(
        function=call,
        args=[TransportableObject(a) for a in args],
        kwargs={},
        dispatch_id="dispatch-discovery",
        results_dir=results_dir,
        node_id=0,
    )
    await listener
    return result, messages


def test_runs_a_task_as_covalents_dispatcher_would(default_session, tmp_path):
    executor = _executor_manager.get_executor("awslambda")
    (output, stdout, stderr, status), messages = asyncio.run(
        _dispatch(executor, multiply, [6, 7], str(tmp_path))
    )
    assert output.get_deserialized() == 42
    assert stdout == "multiplying 6 by 7\n" and stderr == ""
    assert str(status) == "COMPLETED"
    # the job handle went to the dispatcher (it is what cancel(job_handle) receives later)
    puts = [body for action, body in messages if action == Signals.PUT]
    assert puts and puts[0][0] == "job_handle" and "task_id" in puts[0][1]


def test_task_exception_reaches_the_dispatcher_as_covalent_records_it(default_session, tmp_path):
    """As for Covalent's dask executor: status FAILED, the task's output in stdout, the remote
    traceback (ending with the type and message) in stderr."""
    executor = _executor_manager.get_executor("awslambda")
    (output, stdout, stderr, status), _ = asyncio.run(_dispatch(executor, broken, ["boom"], str(tmp_path)))
    assert str(status) == "FAILED" and output is None
    assert stdout == "about to break\n"
    assert stderr.startswith("Traceback (most recent call last):\n")
    assert "in broken\n" in stderr and stderr.rstrip().endswith("ElectronError: 'boom'")


def test_timeout_names_the_electron_and_covalents_settings(default_session, tmp_path):
    executor = AWSLambdaExecutor(timeout=1)
    with pytest.raises(TaskTimeoutError) as info:
        asyncio.run(_dispatch(executor, sleepy, [30], str(tmp_path)))
    message = str(info.value)
    assert "electron 'sleepy' (dispatch dispatch-discovery, node 0" in message
    assert "AWSLambdaExecutor(timeout=...)" in message and "[executors.awslambda]" in message
    assert "partial" not in message and "options=" not in message
