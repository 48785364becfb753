"""The ``lambdarun`` command line."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from lambdarun.errors import LambdarunError


@click.group()
def cli() -> None:
    """lambdarun: run Python code on AWS Lambda or on the local Lambda target."""


@cli.command()
def version() -> None:
    """Print lambdarun's version and the installed backends."""
    import lambdarun
    from lambdarun.plugins import describe_plugins, make_plugin_manager

    from lambdarun.backends import BackendRegistry
    from lambdarun.errors import PluginError

    pm = make_plugin_manager()
    click.echo(f"lambdarun {lambdarun.__version__}")
    for info in describe_plugins(pm):
        click.echo(f"  {info.name}: {info.distribution} {info.version}")
    registry = BackendRegistry()
    pm.hook.lambdarun_register_backends(register=registry)
    try:
        default, problem = registry.default_id, None
    except PluginError as exc:  # several plugins offer a default: say so, do not fail
        default, problem = None, str(exc)
    names = [f"{b} (default)" if b == default else b for b in registry.ids()]
    click.echo(f"backends: {', '.join(names) or 'none installed'}")
    if problem:
        click.echo(f"  {problem}")


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include lambdarun's built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(show_all: bool, as_json: bool) -> None:
    """List plugins with their distribution, version and implemented hooks."""
    from lambdarun.plugins import describe_plugins, make_plugin_manager

    pm = make_plugin_manager()
    infos = describe_plugins(pm, include_builtin=show_all)
    if as_json:
        payload = [
            {
                "name": i.name,
                "distribution": i.distribution,
                "version": i.version,
                "hooks": list(i.hooks),
                "builtin": i.builtin,
            }
            for i in infos
        ]
        failed = [{"name": f.name, "error": f.error} for f in pm.failed]
        click.echo(json.dumps({"plugins": payload, "failed": failed}, indent=2))
        return
    if not infos:
        click.echo("no plugins installed (use --all to show built-ins)")
    for info in infos:
        where = f"{info.distribution} {info.version}" if info.distribution else "(not from a distribution)"
        click.echo(f"{info.name}  [{where}]")
        for hook in info.hooks:
            click.echo(f"    {hook}")
    for failed in pm.failed:
        click.echo(f"{failed.name}  FAILED TO LOAD: {failed.error}", err=True)


def _parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _load_callable(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not attr:
        raise click.BadParameter(f"{spec!r}: expected module:function", param_hint="FUNCTION")
    sys.path.insert(0, ".")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="FUNCTION") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}", param_hint="FUNCTION") from None
    return target


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("function")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--backend", "-b", default=None, help="Backend (default: config key 'backend', else the backend an installed plugin registers as the default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run(function: str, args: tuple[str, ...], backend: str | None, as_json: bool) -> None:
    """Run FUNCTION (module:function) with ARGS on Lambda and print the result.

    Each ARG is parsed as JSON when it can be (1, 2.5, "[1,2]", '{"a":1}'), else taken
    as a string; KEY=VALUE passes a keyword argument.
    """
    import lambdarun

    func = _load_callable(function)
    positional, keywords = [], {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key.isidentifier():
            keywords[key] = _parse_arg(value)
        else:
            positional.append(_parse_arg(arg))
    try:
        result = lambdarun.run(func, *positional, backend=backend, **keywords)
    except LambdarunError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    click.echo(json.dumps(result) if as_json else repr(result))


def _attach_plugin_commands() -> None:
    from lambdarun.plugins import make_plugin_manager

    try:
        pm = make_plugin_manager()
    except LambdarunError as exc:  # keep the CLI usable to diagnose plugin problems
        click.echo(f"warning: {exc}", err=True)
        return
    pm.hook.lambdarun_add_commands(cli=cli)


def main(argv: list[str] | None = None) -> Any:
    _attach_plugin_commands()
    return cli.main(args=argv, prog_name="lambdarun")


if __name__ == "__main__":  # pragma: no cover
    main()
