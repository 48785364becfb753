"""``lambdarun durable ...``: list, describe, history, stop, pause, resume, delete and
callbacks from the shell.

Every command goes through :func:`lambdarun_durable.control.open_control`: the target's
durable-execution API (the local Lambda service, AWS) through its boto3 ``lambda`` client,
or, where ``durable.api = "orchestrator"`` (or ``--store-url`` names a store), the in-process
orchestrator's checkpoint store. Output is the API's own shapes as JSON; the API's errors
become messages that say what to do (exit code 1; a malformed option: 2).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click


def _json(value: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, datetime.datetime):
            return o.isoformat()
        if isinstance(o, bytes | bytearray):
            return o.decode("utf-8", "replace")
        return str(o)

    return json.dumps(value, indent=2, default=default)


def _overrides(store_url: str | None) -> dict[str, Any] | None:
    # naming a store means the orchestrator's store: the one switch (durable.api) follows it
    return {"durable": {"store_url": store_url, "api": "orchestrator"}} if store_url else None


def _run(fn: Callable[[], Any]) -> Any:
    from lambdarun.errors import LambdarunError

    try:
        return fn()
    except LambdarunError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def _control(store_url: str | None) -> Iterator[Any]:
    from lambdarun.session import Session

    from lambdarun_durable.control import open_control

    session = _run(lambda: Session(overrides=_overrides(store_url)))  # a bad setting is reported like any error
    try:
        yield _run(lambda: open_control(session))
    finally:
        session.close()


def _act(store_url: str | None, action: Callable[[Any], Any]) -> None:
    with _control(store_url) as control:
        click.echo(_json(_run(lambda: action(control))))


class _Timestamp(click.ParamType):
    """ISO 8601 (``2026-12-07T06:00:00``, UTC when no offset is given) or epoch seconds."""

    name = "timestamp"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            return value
        text = str(value).strip()
        try:
            if text.replace(".", "", 1).isdigit():
                return datetime.datetime.fromtimestamp(float(text), tz=datetime.UTC)
            when = datetime.datetime.fromisoformat(text)
        except (ValueError, OverflowError, OSError):
            self.fail(f"{value!r} is not a timestamp: use ISO 8601 (2026-12-07T06:00:00Z) or epoch seconds",
                      param, ctx)
        return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _statuses(ctx: Any, param: Any, values: tuple[str, ...]) -> tuple[str, ...]:
    from lambdarun.errors import ConfigError

    from lambdarun_durable.control import statuses_of

    try:
        return statuses_of([v for value in values for v in value.split(",")])
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


store_option = click.option(
    "--store-url", default=None,
    help="Read the in-process orchestrator's checkpoint store at this URL (implies durable.api = orchestrator).",
)
paging = [
    click.option("--max-items", type=click.IntRange(min=1), default=None,
                 help="At most this many items; NextToken then continues (default: all)."),
    click.option("--starting-token", default=None, help="The NextToken of the previous output."),
]


def _paging(fn: Any) -> Any:
    for option in reversed(paging):
        fn = option(fn)
    return fn


@click.group()
def durable() -> None:
    """Durable executions: list, inspect, stop, pause, resume, delete, complete callbacks.

    They go through the target's durable-execution API (local target and AWS alike), or the
    in-process orchestrator's checkpoint store where durable.api = "orchestrator"."""


@durable.command(name="list")
@click.option("--function", "function", default=None,
              help="The durable function (name or ARN; default: the durable backend's, <function_name>-durable).")
@click.option("--status", "statuses", multiple=True, callback=_statuses,
              help="RUNNING, SUCCEEDED, FAILED, TIMED_OUT, STOPPED, PAUSING or PAUSED; repeat or comma-separate.")
@click.option("--name", default=None, help="Only executions of this DurableExecutionName.")
@click.option("--started-after", type=_Timestamp(), default=None, help="ISO 8601 or epoch seconds.")
@click.option("--started-before", type=_Timestamp(), default=None, help="ISO 8601 or epoch seconds.")
@click.option("--reverse", is_flag=True, help="Newest first (ReverseOrder).")
@_paging
@store_option
def list_(function: str | None, statuses: tuple[str, ...], name: str | None, started_after: Any,
          started_before: Any, reverse: bool, max_items: int | None, starting_token: str | None,
          store_url: str | None) -> None:
    """ListDurableExecutionsByFunction: a function's executions, oldest first."""
    from lambdarun_durable.control import ListFilter

    filters = ListFilter(statuses=statuses, name=name, started_after=started_after,
                         started_before=started_before, reverse=reverse)
    _act(store_url, lambda c: c.list_executions(function, filters, max_items=max_items, marker=starting_token))


@durable.command()
@click.argument("arn")
@click.option("--no-data", is_flag=True, help="Leave the input and result out (IncludeExecutionData false).")
@store_option
def describe(arn: str, no_data: bool, store_url: str | None) -> None:
    """GetDurableExecution: status, timestamps, input and result or error."""
    _act(store_url, lambda c: c.describe(arn, include_data=not no_data))


@durable.command()
@click.argument("arn")
@click.option("--no-data", is_flag=True, help="Leave payloads out (IncludeExecutionData false).")
@click.option("--reverse", is_flag=True, help="Newest event first (ReverseOrder).")
@_paging
@store_option
def history(arn: str, no_data: bool, reverse: bool, max_items: int | None, starting_token: str | None,
            store_url: str | None) -> None:
    """GetDurableExecutionHistory: the execution's events, every page."""
    _act(store_url, lambda c: c.history(arn, include_data=not no_data, reverse=reverse, max_items=max_items,
                                        marker=starting_token))


@durable.command()
@click.argument("arn")
@click.option("--message", default="Execution stopped", show_default=True, help="The ErrorObject's ErrorMessage.")
@click.option("--type", "error_type", default=None, help="The ErrorObject's ErrorType.")
@store_option
def stop(arn: str, message: str, error_type: str | None, store_url: str | None) -> None:
    """StopDurableExecution: end a running execution STOPPED."""
    error = {"ErrorMessage": message, **({"ErrorType": error_type} if error_type else {})}
    _act(store_url, lambda c: c.stop(arn, error))


@durable.command()
@click.argument("arn")
@click.option("--reason", default=None, help="Why (kept with the pause).")
@store_option
def pause(arn: str, reason: str | None, store_url: str | None) -> None:
    """PauseDurableExecution: no new invocation starts until resume (PAUSING while one runs)."""
    _act(store_url, lambda c: c.pause(arn, reason=reason))


@durable.command()
@click.argument("arn")
@click.option("--reason", default=None, help="Why (on the durable-execution API).")
@click.option("--timeout", default=None, type=float,
              help="Orchestrator only: seconds to wait for the end (default: no limit).")
@click.option(
    "--wait", default=None, type=click.FloatRange(min=0),
    help="Orchestrator only: seconds to wait while another driver holds the lease (default: durable.lease_wait).",
)
@store_option
def resume(arn: str, reason: str | None, timeout: float | None, wait: float | None, store_url: str | None) -> None:
    """ResumeDurableExecution: let a paused execution go on.

    Where durable.api = "orchestrator" (or with --store-url) nothing pauses; instead this drives
    an execution started by the durable backend to its end and prints its result. One driver
    per execution: while another process drives it, this exits with LeaseHeldError naming that
    driver (or waits, --wait). A finished execution prints its result, or fails with its error,
    at once.
    """
    from lambdarun.session import Session

    from lambdarun_durable.backend import uses_durable_api

    def go() -> Any:
        session = Session(overrides=_overrides(store_url))  # a bad setting is reported like any error
        try:
            if store_url is None and uses_durable_api(session):
                from lambdarun_durable.control import open_control

                return open_control(session).resume(arn, reason=reason)
            return session.backend("durable").resume(arn, wait=wait).result(timeout=timeout)
        finally:
            session.close()

    click.echo(_json(_run(go)))


@durable.command()
@click.argument("arn")
@store_option
def delete(arn: str, store_url: str | None) -> None:
    """DeleteDurableExecution: remove an ended execution and its history."""
    _act(store_url, lambda c: c.delete(arn))


@durable.command(name="send-callback-success")
@click.argument("callback_id")
@click.argument("result", required=False)
@store_option
def send_callback_success(callback_id: str, result: str | None, store_url: str | None) -> None:
    """SendDurableExecutionCallbackSuccess: complete a callback with RESULT (passed as is)."""
    _act(store_url, lambda c: c.send_callback_success(callback_id, result))


@durable.command(name="send-callback-failure")
@click.argument("callback_id")
@click.option("--message", default="Callback failed", show_default=True)
@click.option("--type", "error_type", default=None)
@click.option("--data", default=None)
@store_option
def send_callback_failure(
    callback_id: str, message: str, error_type: str | None, data: str | None, store_url: str | None
) -> None:
    """SendDurableExecutionCallbackFailure: fail a callback (the handler's result() raises)."""
    error = {"ErrorMessage": message, **({"ErrorType": error_type} if error_type else {}),
             **({"ErrorData": data} if data else {})}
    _act(store_url, lambda c: c.send_callback_failure(callback_id, error))


@durable.command(name="send-callback-heartbeat")
@click.argument("callback_id")
@store_option
def send_callback_heartbeat(callback_id: str, store_url: str | None) -> None:
    """SendDurableExecutionCallbackHeartbeat: restart the callback's heartbeat timeout."""
    _act(store_url, lambda c: c.send_callback_heartbeat(callback_id))
