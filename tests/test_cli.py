"""The lambdarun command line."""

from __future__ import annotations

import json
import subprocess
import sys

import click
from click.testing import CliRunner

from lambdarun import hookimpl
from lambdarun.cli import cli, main


def test_version():
    result = CliRunner().invoke(cli, ["version"])
    assert result.exit_code == 0 and result.output.startswith("lambdarun 0.1.0")


class _OneBackend:
    def __init__(self, backend_id, default):
        from lambdarun.backends import Backend

        self.cls = type(f"B_{backend_id}", (Backend,), {"id": backend_id})
        self.default = default

    @hookimpl
    def lambdarun_register_backends(self, register):
        register.add_backend(self.cls, default=self.default)


def test_version_marks_the_registry_default_backend(monkeypatch, lambdarun_plugin_manager):
    import lambdarun.plugins

    pm = lambdarun_plugin_manager(_OneBackend("lr_alpha", False), _OneBackend("lr_beta", True))
    monkeypatch.setattr(lambdarun.plugins, "make_plugin_manager", lambda *a, **k: pm)
    result = CliRunner().invoke(cli, ["version"])
    assert result.exit_code == 0, result.output
    line = [l for l in result.output.splitlines() if l.startswith("backends:")][0]
    assert "lr_alpha," in line and "lr_beta (default)" in line and "lr_alpha (default)" not in line


def test_version_names_competing_defaults_without_failing(monkeypatch, lambdarun_plugin_manager):
    import lambdarun.plugins

    pm = lambdarun_plugin_manager(_OneBackend("lr_alpha", True), _OneBackend("lr_beta", True))
    monkeypatch.setattr(lambdarun.plugins, "make_plugin_manager", lambda *a, **k: pm)
    result = CliRunner().invoke(cli, ["version"])
    assert result.exit_code == 0, result.output
    assert "backends: lr_alpha, lr_beta\n" in result.output
    assert "several installed backends offer to be the default (lr_alpha, lr_beta)" in result.output


def test_plugins_all_json_lists_builtins_with_hooks():
    result = CliRunner().invoke(cli, ["plugins", "--all", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["lambdarun.storage"]["hooks"] == ["lambdarun_make_storage"]
    assert by_name["lambdarun.storage"]["builtin"] is True
    plain = CliRunner().invoke(cli, ["plugins"])
    assert "lambdarun.storage" not in plain.output


def test_plugins_reports_a_broken_plugin(make_distribution):
    make_distribution("lambdarun-broken", "0.0.1", {"broken": "lr_no_such_module_anywhere"})
    result = CliRunner().invoke(cli, ["plugins", "--json"], env={"LAMBDARUN_PLUGINS": "broken"})
    assert result.exit_code == 0
    assert json.loads(result.stdout)["failed"][0]["name"] == "broken"


class CommandPlugin:
    @hookimpl
    def lambdarun_add_commands(self, cli):
        @click.command("hello")
        def hello():
            click.echo("hello from a plugin")

        cli.add_command(hello)


def test_plugins_add_commands(lambdarun_plugin_manager):
    pm = lambdarun_plugin_manager(CommandPlugin())
    group = click.Group("lambdarun")
    pm.hook.lambdarun_add_commands(cli=group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.output == "hello from a plugin\n"


def test_run_bad_function_spec_is_a_usage_error():
    result = CliRunner().invoke(cli, ["run", "no_colon_here"])
    assert result.exit_code == 2 and "expected module:function" in result.output
    result = CliRunner().invoke(cli, ["run", "lr_no_such_module:f"])
    assert result.exit_code == 2 and "cannot import 'lr_no_such_module'" in result.output


def test_console_script_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-c", "from lambdarun.cli import main; main(['version'])"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and "lambdarun 0.1.0" in out.stdout


def test_run_a_function_end_to_end_on_the_local_target(tmp_path, local_stack):
    """`lambdarun run module:function ARGS` in a fresh process, on the local target."""
    import os

    (tmp_path / "lr_cli_tasks.py").write_text(
        "import os\n"
        "def describe(a, b, sep='-'):\n"
        "    return {'joined': f'{a}{sep}{b}', 'in_lambda': 'AWS_LAMBDA_FUNCTION_NAME' in os.environ}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDARUN_")}
    env.update(LAMBDARUN_TARGET="local", LAMBDARUN_LOCAL__STATE_DIR=str(local_stack.state_dir))
    out = subprocess.run(
        [sys.executable, "-c", "from lambdarun.cli import main; main()", "run", "lr_cli_tasks:describe",
         "3", "[1, 2]", "sep=+", "--backend", "covalent", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"joined": "3+[1, 2]", "in_lambda": True}
