"""``DurableContext``: the object a durable handler receives (AWS SDK names, lambdarun's engine).

Each operation kind lives in its own module of :mod:`lambdarun_durable.operations`;
this module assembles them into the public class and holds the SDK's decorators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from lambdarun_durable.operation_config import ParallelBranch
from lambdarun_durable.operations.base import (  # noqa: F401 - their former home
    PASS_THROUGH_SERDES,
    ExecutionContext,
)
from lambdarun_durable.operations.batch import BatchOperations
from lambdarun_durable.operations.callback import Callback, CallbackOperations  # noqa: F401 - Callback's former home
from lambdarun_durable.operations.invoke import InvokeOperations
from lambdarun_durable.operations.step import StepOperations
from lambdarun_durable.operations.wait import WaitOperations
from lambdarun_durable.state import ExecutionState
from lambdarun_durable.types import StepContext, WaitForCallbackContext

T = TypeVar("T")
Params = ParamSpec("Params")


# --- the context ------------------------------------------------------------------------------


class DurableContext(StepOperations, WaitOperations, CallbackOperations, InvokeOperations, BatchOperations):
    """The object a durable handler receives; every method is a checkpointed operation.

    ``step`` (:mod:`~lambdarun_durable.operations.step`), ``wait`` and ``wait_for_condition``
    (:mod:`~lambdarun_durable.operations.wait`), ``create_callback`` and ``wait_for_callback``
    (:mod:`~lambdarun_durable.operations.callback`), ``invoke``
    (:mod:`~lambdarun_durable.operations.invoke`), ``run_in_child_context``
    (:mod:`~lambdarun_durable.operations.child`), ``map`` and ``parallel``
    (:mod:`~lambdarun_durable.operations.batch`).
    """

    # -- factories
    @staticmethod
    def from_lambda_context(state: ExecutionState, lambda_context: Any, replaying: bool = False) -> DurableContext:
        return DurableContext(
            state=state,
            execution_context=ExecutionContext(durable_execution_arn=state.durable_execution_arn),
            lambda_context=lambda_context,
            replaying=replaying,
        )


# --- decorators -----------------------------------------------------------------------


def durable_step(
    func: Callable[Concatenate[StepContext, Params], T],
) -> Callable[Params, Callable[[StepContext], T]]:
    """``@durable_step def f(step_ctx, a, b)`` -> ``context.step(f(a, b))`` (named ``f``)."""

    def wrapper(*args: Any, **kwargs: Any) -> Callable[[StepContext], T]:
        def function_with_arguments(context: StepContext) -> T:
            return func(context, *args, **kwargs)

        function_with_arguments._original_name = func.__name__  # type: ignore[attr-defined]
        return function_with_arguments

    return wrapper


def durable_with_child_context(
    func: Callable[Concatenate[DurableContext, Params], T],
) -> Callable[Params, Callable[[DurableContext], T]]:
    """``@durable_with_child_context def f(ctx, a)`` -> ``context.run_in_child_context(f(a))``."""

    def wrapper(*args: Any, **kwargs: Any) -> Callable[[DurableContext], T]:
        def function_with_arguments(child_context: DurableContext) -> T:
            return func(child_context, *args, **kwargs)

        function_with_arguments._original_name = func.__name__  # type: ignore[attr-defined]
        return function_with_arguments

    return wrapper


def durable_parallel_branch(name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., ParallelBranch[T]]]:
    def decorator(func: Callable[..., T]) -> Callable[..., ParallelBranch[T]]:
        def wrapper(*args: Any, **kwargs: Any) -> ParallelBranch[T]:
            def function_with_arguments(ctx: DurableContext) -> T:
                return func(ctx, *args, **kwargs)

            return ParallelBranch(func=function_with_arguments, name=name)

        return wrapper

    return decorator


def durable_wait_for_callback(
    func: Callable[Concatenate[str, WaitForCallbackContext, Params], T],
) -> Callable[Params, Callable[[str, WaitForCallbackContext], T]]:
    """Bind extra arguments to a wait_for_callback submitter ``f(callback_id, ctx, ...)``."""

    def wrapper(*args: Any, **kwargs: Any) -> Callable[[str, WaitForCallbackContext], T]:
        def submitter_with_arguments(callback_id: str, context: WaitForCallbackContext) -> T:
            return func(callback_id, context, *args, **kwargs)

        submitter_with_arguments._original_name = func.__name__  # type: ignore[attr-defined]
        return submitter_with_arguments

    return wrapper
