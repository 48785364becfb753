"""The deploy plugin: the ``[deploy]`` config section and the ``deploy``/``destroy`` commands.

Registered by module name (``lambdarun.deploy.plugin``). Heavy modules (boto3, the package
builder) are imported inside the commands, so ``lambdarun --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import click

from lambdarun.deploy.config import DeployConfig
from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.config import ConfigRegistry
    from lambdarun.session import Session

__all__ = ["DeployContext", "deploy_command", "destroy_command"]


@attrs.frozen
class DeployContext:
    """How the commands make their session; tests pass one as click's ``obj``.

    ``make_session(overrides)`` returns a :class:`lambdarun.session.Session`.
    """

    make_session: Callable[[Mapping[str, Any]], Session]


def _default_session(overrides: Mapping[str, Any]) -> Session:
    import lambdarun.deploy.plugin as this
    from lambdarun.plugins import make_plugin_manager
    from lambdarun.session import Session

    pm = make_plugin_manager()
    # until both are default plugins: the [deploy] section and the local target
    if not pm.is_registered(this) and pm.get_plugin(this.__name__) is None:
        pm.register(this, name=this.__name__)
    try:
        import lambdarun.local.plugin as local
    except ImportError:  # installed without the [local] extra
        local = None
    if local is not None and not pm.is_registered(local) and pm.get_plugin(local.__name__) is None:
        pm.register(local, name=local.__name__)
    return Session(pm, overrides=overrides or None)


def _session(ctx: click.Context, target: str | None) -> Session:
    context = ctx.find_object(DeployContext)
    make = context.make_session if context is not None else _default_session
    return make({"target": target} if target else {})


def _run(action: Callable[[], Any]) -> Any:
    from lambdarun.errors import LambdarunError

    try:
        return action()
    except LambdarunError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


_target_option = click.option(
    "--target",
    type=click.Choice(["aws", "local"]),
    default=None,
    help="Where to deploy (default: config key 'target'). 'aws' honours the [aws] endpoint URLs.",
)
_function_option = click.option("--function", "function_name", default=None, help="Function name (default: config key 'function_name').")


@click.command("deploy")
@_target_option
@_function_option
@click.option("--requirements", "-r", type=click.Path(exists=True, dir_okay=False), default=None, help="pip requirements file of your dependencies.")
@click.option("--include", "-i", multiple=True, type=click.Path(exists=True), help="Your code (module, package or directory) to put in the zip; repeatable.")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--layer/--no-layer", default=None, help="Dependencies as a Lambda layer, code in the function zip.")
@click.option("--rotate-key", is_flag=True, help="Replace the signing key in the function's secret (callers then sign with the new key).")
@click.pass_context
def deploy_command(
    ctx: click.Context,
    target: str | None,
    function_name: str | None,
    requirements: str | None,
    include: tuple[str, ...],
    dry_run: bool,
    layer: bool | None,
    rotate_key: bool,
) -> None:
    """Build the deployment zip and create or update the lambdarun Lambda function.

    Creates what is missing (execution role with a least-privilege policy, S3 bucket,
    DynamoDB table of the durable backend, the Secrets Manager secret holding the envelope
    signing key), then the function; a second deploy with no change does nothing. An
    existing key is never replaced unless --rotate-key.
    """
    from lambdarun.deploy.api import deploy
    from lambdarun.deploy.plan import ApplyResult

    session = _session(ctx, target)
    try:
        result = _run(
            lambda: deploy(
                session,
                dry_run=dry_run,
                function_name=function_name,
                requirements=requirements,
                include=list(include) if include else None,
                layer=layer,
                echo=lambda line: click.echo(line, err=True),
                rotate_key=rotate_key,
            )
        )
    finally:
        if ctx.find_object(DeployContext) is None:
            session.close()
    if isinstance(result, ApplyResult):
        click.echo(result.render())
        for note in result.plan.spec.notes:
            click.echo(f"note: {note}")
    else:
        click.echo(result.render())
        click.echo("(dry run: nothing was changed)")


@click.command("destroy")
@_target_option
@_function_option
@click.option("--dry-run", is_flag=True, help="Print what would be deleted and change nothing.")
@click.pass_context
def destroy_command(ctx: click.Context, target: str | None, function_name: str | None, dry_run: bool) -> None:
    """Delete what `lambdarun deploy` created for the function, and nothing else."""
    from lambdarun.deploy.api import destroy
    from lambdarun.deploy.plan import ApplyResult

    session = _session(ctx, target)
    try:
        result = _run(
            lambda: destroy(session, dry_run=dry_run, function_name=function_name, echo=lambda line: click.echo(line, err=True))
        )
    finally:
        if ctx.find_object(DeployContext) is None:
            session.close()
    if isinstance(result, ApplyResult):
        click.echo(result.render())
    else:
        click.echo(result.render())
        click.echo("(dry run: nothing was changed)")


@hookimpl
def lambdarun_register_config(register: ConfigRegistry) -> None:
    register.add_section("deploy", DeployConfig)


@hookimpl
def lambdarun_add_commands(cli: Any) -> None:
    cli.add_command(deploy_command)
    cli.add_command(destroy_command)
