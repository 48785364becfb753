"""``lambdarun local up | status | down``: a shared local stack for several processes.

Also runnable on its own: ``python -m lambdarun.local up``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from lambdarun.errors import LambdarunError, TargetError
from lambdarun.local.persist import forget_saved_state, saved_state_summary, sweep
from lambdarun.local.stack import LocalStack
from lambdarun.local.stack_info import (
    default_state_dir,
    pid_running,
    read_stack_info,
    shared_credentials,
)

__all__ = ["local"]

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Directory holding stack.json, code and logs [default: {default_state_dir()}].",
)


@click.group(name="local")
def local() -> None:
    """Run the local Lambda service and moto server (S3, DynamoDB, IAM) for other processes."""


@local.command()
@click.option("--port", type=int, default=0, show_default=True, help="Lambda API port (0: any free port).")
@click.option("--moto-port", type=int, default=0, show_default=True, help="moto server port (0: any free port).")
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--max-concurrency", type=int, default=0, help="The account's concurrent executions [default: 1000].")
@click.option("--scaling-rate", type=int, default=1000, show_default=True,
              help="New execution environments per function per 10 s.")
@click.option("--idle-timeout", type=float, default=300.0, show_default=True, help="Seconds an idle environment stays warm.")
@click.option("--async-retries", type=int, default=2, show_default=True)
@click.option("--async-retry-delay", type=float, default=1.0, show_default=True)
@click.option("--no-memory-limit", is_flag=True, help="Do not enforce MemorySize (no Runtime.OutOfMemory).")
@click.option("--cloudwatch-logs", is_flag=True, help="Also ship invocation logs to CloudWatch Logs (moto).")
@click.option("--with", "companions", multiple=True, metavar="NAME",
              help="Also host a plugin's companion service next to the stack (e.g. --with temporal: "
                   "the Temporal dev server whose worker controller invokes this stack's Lambda).")
@click.option("--fresh", is_flag=True,
              help="Forget the saved functions, queued events and S3/DynamoDB data first.")
@_state_dir_option
def up(port: int, moto_port: int, region: str, max_concurrency: int, scaling_rate: int, idle_timeout: float,
       async_retries: int, async_retry_delay: float, no_memory_limit: bool, cloudwatch_logs: bool,
       fresh: bool, state_dir: Path | None, companions: tuple[str, ...] = ()) -> None:
    """Start the stack in the foreground; Ctrl-C (or `down`) stops it.

    Functions, queued Event invocations and S3/DynamoDB/IAM data saved by the previous stack in
    the same state directory are restored (unless --fresh)."""
    from lambdarun.logs import configure_logging

    configure_logging(os.environ.get("LAMBDARUN_LOG_LEVEL", "INFO"))
    starters = _companion_starters(companions)
    stack = LocalStack(
        state_dir, port=port, moto_port=moto_port, region=region,
        max_concurrency=max_concurrency, scaling_rate=scaling_rate, idle_timeout=idle_timeout,
        async_retries=async_retries, async_retry_delay=async_retry_delay,
        memory_limit=not no_memory_limit, cloudwatch_logs=cloudwatch_logs, reuse=False, shared=True, stop_at_exit=True,
    )
    if fresh:
        if read_stack_info(stack.state_dir) is not None:
            raise click.ClickException(f"a local stack is up in {stack.state_dir}: `lambdarun local down` first")
        forget_saved_state(stack.state_dir)
    try:
        stack.start()
    except TargetError as e:
        raise click.ClickException(str(e)) from e
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ep = stack.endpoints
    from lambdarun.dashboard import start_for_stack

    try:
        dashboard = start_for_stack(stack)
    except LambdarunError as e:  # never fatal: the stack works without its dashboard
        dashboard = None
        click.echo(f"warning: the dashboard did not start: {e}", err=True)
    click.echo(f"lambdarun local stack up (pid {os.getpid()}, state {stack.state_dir})")
    click.echo(f"  lambda:   {ep.lambda_}")
    click.echo(f"  s3, dynamodb, iam, sts (moto): {ep.moto}")
    if dashboard is not None:
        click.echo(f"  dashboard: {dashboard.url_with_token}")
    # endpoints, region and the stack's credentials: the only ones its endpoints accept
    for line in stack.export_lines():
        click.echo(line)
    stoppers = []
    try:
        for name, start in starters:
            try:
                stoppers.append(start(stack, click.echo))
            except LambdarunError as e:
                raise click.ClickException(f"--with {name}: {e}") from e
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        for stopper in reversed(stoppers):
            stopper()
        if dashboard is not None:
            dashboard.stop()
        stack.stop()
    click.echo("lambdarun local stack stopped")


@local.command()
@_state_dir_option
def status(state_dir: Path | None) -> None:
    """Print the running stack's pid and endpoints (exit status 1 when none is up)."""
    info = read_stack_info(state_dir)
    directory = Path(state_dir or default_state_dir()).expanduser()
    saved = saved_state_summary(directory)
    if info is None:
        click.echo(f"no local stack is up in {directory}")
        if saved:
            click.echo(f"  saved for the next `up`: {saved}")
        sys.exit(1)
    click.echo(f"lambdarun local stack up (pid {info.pid}, state {info.state_dir})")
    if saved:
        click.echo(f"  saved: {saved}")
    click.echo(f"  lambda:   {info.endpoints.lambda_}")
    click.echo(f"  s3, dynamodb, iam, sts (moto): {info.endpoints.moto}")
    credentials = shared_credentials(state_dir)
    for line in info.endpoints.export_lines():
        click.echo(line)
    if credentials is not None:
        for key, value in credentials.environment().items():
            click.echo(f"export {key}={value}")


@local.command()
@click.option("--timeout", type=float, default=15.0, show_default=True,
              help="Seconds to wait for a clean stop before killing it.")
@_state_dir_option
def down(timeout: float, state_dir: Path | None) -> None:
    """Stop the running stack and every execution environment it started.

    Its functions, queued Event invocations and S3/DynamoDB data stay in the state directory
    for the next `up`. Run directories of killed embedded stacks and extracted code no
    function uses are removed (also when no stack is up).
    """
    directory = Path(state_dir or default_state_dir()).expanduser()
    info = read_stack_info(directory)
    if info is None:
        click.echo(f"no local stack is up in {directory}")
    else:
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_running(info.pid):
            time.sleep(0.02)
        if pid_running(info.pid):
            os.kill(info.pid, signal.SIGKILL)
            click.echo(f"killed local stack (pid {info.pid}) after {timeout:.0f} s")
        else:
            click.echo(f"stopped local stack (pid {info.pid})")
    if directory.is_dir() and read_stack_info(directory) is None:
        removed = sweep(directory, shared_code=True)
        if removed["run_dirs"] or removed["code_dirs"]:
            click.echo(f"removed {removed['run_dirs']} stale run directories and "
                       f"{removed['code_dirs']} unused code directories")


def _companion_starters(names: tuple[str, ...]) -> list[tuple[str, Any]]:
    """The start functions of the companions named (``lambdarun_local_companions``)."""
    if not names:
        return []
    from lambdarun.plugins import make_plugin_manager

    offered: dict[str, Any] = {}
    make_plugin_manager().hook.lambdarun_local_companions(register=offered)
    unknown = [n for n in names if n not in offered]
    if unknown:
        raise click.ClickException(
            f"no installed plugin offers --with {', '.join(unknown)}; available: "
            f"{', '.join(sorted(offered)) or 'none'} (e.g. pip install lambdarun-temporal for temporal)")
    return [(n, offered[n]) for n in dict.fromkeys(names)]


@local.command()
@click.argument("function")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option("--lines", "-n", type=int, default=50, show_default=True, help="Lines of history to print.")
@_state_dir_option
def logs(function: str, follow: bool, lines: int, state_dir: Path | None) -> None:
    """Print the logs of FUNCTION on the shared stack (START/END/REPORT and its output)."""
    base = Path(state_dir or default_state_dir()).expanduser() / "shared" / "logs" / function
    files = sorted(base.glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not files and not follow:
        click.echo(f"no logs for {function!r} in {base}")
        sys.exit(1)
    history: list[str] = []
    offsets: dict[Path, int] = {}
    for path in files:
        data = path.read_bytes()
        offsets[path] = len(data)
        history.extend(data.decode("utf-8", "replace").splitlines())
    for line in history[-lines:] if lines else []:
        click.echo(line)
    while follow:
        time.sleep(0.25)
        for path in sorted(base.glob("*.log"), key=lambda p: p.stat().st_mtime):
            with open(path, "rb") as f:
                f.seek(offsets.get(path, 0))
                chunk = f.read()
            if chunk:
                offsets[path] = offsets.get(path, 0) + len(chunk)
                click.echo(chunk.decode("utf-8", "replace"), nl=False)


def main() -> None:
    local(prog_name="python -m lambdarun.local")


if __name__ == "__main__":
    main()
