"""``lambdarun durable ...``: history, list, describe, stop and callbacks from the shell."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click


def _json(value: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, datetime.datetime):
            return o.isoformat()
        return str(o)

    return json.dumps(value, indent=2, default=default)


@contextmanager
def _service(store_url: str | None) -> Iterator[Any]:
    from lambdarun.session import Session

    from lambdarun_durable.service import DurableService

    overrides = {"durable": {"store_url": store_url}} if store_url else None
    session = Session(overrides=overrides)
    try:
        url = session.settings.section("durable").resolved_store_url()
        yield DurableService(session.checkpoint_store(url), region=session.settings.region)
    finally:
        session.close()


def _run(fn: Any) -> None:
    from lambdarun.errors import LambdarunError

    try:
        fn()
    except LambdarunError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


store_option = click.option(
    "--store-url", default=None, help="Checkpoint store (default: the durable.store_url setting)."
)


@click.group()
def durable() -> None:
    """Durable executions: inspect, stop, and complete callbacks."""


@durable.command()
@click.argument("arn")
@click.option("--no-data", is_flag=True, help="Leave payloads out (Truncated: true).")
@store_option
def history(arn: str, no_data: bool, store_url: str | None) -> None:
    """Print an execution's events (GetDurableExecutionHistory shape) as JSON."""
    with _service(store_url) as service:
        _run(lambda: click.echo(_json(service.get_history(arn, include_execution_data=not no_data))))


@durable.command(name="list")
@click.option("--status", default=None, help="RUNNING, SUCCEEDED, FAILED, STOPPED or TIMED_OUT.")
@click.option("--limit", default=100, show_default=True)
@store_option
def list_(status: str | None, limit: int, store_url: str | None) -> None:
    """List executions, newest first."""
    with _service(store_url) as service:
        _run(lambda: click.echo(_json({"DurableExecutions": service.list_executions(status=status, limit=limit)})))


@durable.command()
@click.argument("arn")
@store_option
def describe(arn: str, store_url: str | None) -> None:
    """Print an execution's status, timestamps and result or error."""
    with _service(store_url) as service:
        _run(lambda: click.echo(_json(service.describe(arn))))


@durable.command()
@click.argument("arn")
@click.option("--message", default="Execution stopped", show_default=True)
@store_option
def stop(arn: str, message: str, store_url: str | None) -> None:
    """Stop a running execution."""
    with _service(store_url) as service:
        _run(lambda: service.stop_execution(arn, {"ErrorMessage": message, "ErrorType": "ExecutionStopped"}))
        click.echo(f"stopped {arn}")


@durable.command()
@click.argument("arn")
@click.option("--timeout", default=None, type=float, help="Seconds to wait for the end (default: no limit).")
@click.option(
    "--wait", default=None, type=click.FloatRange(min=0),
    help="Seconds to wait while another driver holds the execution's lease (default: durable.lease_wait).",
)
@store_option
def resume(arn: str, timeout: float | None, wait: float | None, store_url: str | None) -> None:
    """Drive an execution started by the durable backend to its end; print its result.

    One driver per execution: while another process drives it, this exits with
    LeaseHeldError naming that driver (or waits, --wait). A finished execution prints
    its result, or fails with its error, at once.
    """
    from lambdarun.session import Session

    overrides = {"durable": {"store_url": store_url}} if store_url else None

    def go() -> None:
        session = Session(overrides=overrides)  # a bad setting is reported like any error
        try:
            click.echo(_json(session.backend("durable").resume(arn, wait=wait).result(timeout=timeout)))
        finally:
            session.close()

    _run(go)


@durable.command(name="send-callback-success")
@click.argument("callback_id")
@click.argument("result", required=False)
@store_option
def send_callback_success(callback_id: str, result: str | None, store_url: str | None) -> None:
    """Complete a callback with RESULT (a string, passed to the handler as is)."""
    with _service(store_url) as service:
        _run(lambda: service.send_callback_success(callback_id, result))
        click.echo("ok")


@durable.command(name="send-callback-failure")
@click.argument("callback_id")
@click.option("--message", default="Callback failed", show_default=True)
@click.option("--type", "error_type", default=None)
@click.option("--data", default=None)
@store_option
def send_callback_failure(
    callback_id: str, message: str, error_type: str | None, data: str | None, store_url: str | None
) -> None:
    """Fail a callback (the handler's Callback.result() raises CallbackError)."""
    error = {"ErrorMessage": message, **({"ErrorType": error_type} if error_type else {}), **({"ErrorData": data} if data else {})}
    with _service(store_url) as service:
        _run(lambda: service.send_callback_failure(callback_id, error))
        click.echo("ok")


@durable.command(name="send-callback-heartbeat")
@click.argument("callback_id")
@store_option
def send_callback_heartbeat(callback_id: str, store_url: str | None) -> None:
    """Record a heartbeat (restarts the callback's heartbeat timeout)."""
    with _service(store_url) as service:
        _run(lambda: service.send_callback_heartbeat(callback_id))
        click.echo("ok")
