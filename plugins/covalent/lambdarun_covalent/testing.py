"""pytest support: a real Covalent server (``covalent start``) for tests and benchmarks.

::

    from lambdarun.local.testing import local_stack_fixture
    from lambdarun_covalent.testing import covalent_server_fixture

    local_stack = local_stack_fixture(scope="module")
    covalent_server = covalent_server_fixture(scope="module", executor_config={"timeout": 120})

    def test_it(covalent_server):
        dispatch_id = ct.dispatch(lattice, dispatcher_addr=covalent_server.address)(1)
        result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=covalent_server.address)

The server gets private HOME, XDG and Covalent directories, a free port bound to 127.0.0.1,
``LAMBDARUN_TARGET=local`` and the ``local_stack`` fixture's stack; it is stopped with
``covalent stop`` when the fixture's scope ends, and the fixture fails if any of its
processes is still alive then (they are killed, never left behind).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["CovalentServer", "covalent_server_fixture", "lattice_nodes"]

_COVALENT_DIRS = {
    "COVALENT_CONFIG_DIR": "config",
    "COVALENT_CACHE_DIR": "cache",
    "COVALENT_DATA_DIR": "data",
    "COVALENT_LOGDIR": "logs",
    "COVALENT_DISPATCH_CACHE_DIR": "dispatches",
    "COVALENT_EXECUTOR_DIR": "executors",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _covalent_cli() -> str:
    cli = Path(sys.executable).with_name("covalent")
    return str(cli) if cli.exists() else shutil.which("covalent") or "covalent"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class CovalentServer:
    """One ``covalent start`` in a private root directory.

    :param root: its HOME, Covalent directories and database live here.
    :param environ: extra environment (e.g. ``LAMBDARUN_*``) for the server.
    """

    def __init__(self, root: Path, environ: Mapping[str, str] | None = None) -> None:
        self.root = root
        home = root / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COVALENT_", "LAMBDARUN_", "XDG_"))}
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_DATA_HOME=str(home / ".local" / "share"),
            COVALENT_DISPATCHER_ADDR="127.0.0.1",
            COVALENT_DATABASE=str(root / "data" / "dispatcher_db.sqlite"),
            COVALENT_HEARTBEAT_FILE=str(root / "cache" / "heartbeat"),
        )
        for var, sub in _COVALENT_DIRS.items():
            env[var] = str(root / sub)
            (root / sub).mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        env.update(environ or {})
        self.env = env
        self.address = ""
        self.pids: set[int] = set()

    @property
    def config_file(self) -> Path:
        return Path(self.env["COVALENT_CONFIG_DIR"]) / "covalent.conf"

    def write_executor_config(self, values: Mapping[str, Any]) -> None:
        """``[executors.awslambda]`` of the server's covalent.conf (before ``start``)."""
        lines = ["[executors.awslambda]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
        self.config_file.write_text("\n".join(lines) + "\n")

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_covalent_cli(), *args, "--no-header", "--no-footer"],
            env=self.env, cwd=self.root, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self, port: int | None = None, *, cluster: bool = False, workers: int | None = None) -> None:
        """``covalent start`` (without a Dask cluster unless ``cluster``); waits until it answers."""
        import psutil

        args = ["start", "--port", str(port or _free_port())]
        if not cluster:
            args.append("--no-cluster")
        elif workers:
            args += ["--workers", str(workers)]
        proc = self.cli(*args)
        pidfile = Path(self.env["COVALENT_CACHE_DIR"]) / "ui.pid"
        if pidfile.exists():  # every process of the server, to check none is left at stop
            try:
                main = psutil.Process(int(pidfile.read_text().strip()))
                self.pids = {main.pid, *(c.pid for c in main.children(recursive=True))}
            except (psutil.NoSuchProcess, ValueError):
                pass
        if proc.returncode != 0 or "Running" not in proc.stdout:
            log = Path(self.env["COVALENT_LOGDIR"]) / "covalent_ui.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            self.stop()
            raise RuntimeError(f"covalent start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{tail}")
        config = tomllib.loads(self.config_file.read_text())
        self.address = f"http://127.0.0.1:{config['dispatcher']['port']}"

    def stop(self) -> list[int]:
        """``covalent stop``; returns the pids that were still alive afterwards (then killed)."""
        import psutil

        self.cli("stop", timeout=60)

        def alive(pids: Any) -> list[int]:
            out = []
            for pid in pids:
                try:
                    if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        out.append(pid)
                except psutil.NoSuchProcess:
                    pass
            return out

        left = alive(self.pids)
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = alive(left)
        for pid in left:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        return left


def covalent_server_fixture(
    scope: str = "module",
    *,
    cluster: bool = False,
    workers: int | None = None,
    executor_config: Mapping[str, Any] | None = None,
    lambdarun_toml: str | None = None,
) -> Any:
    """A pytest fixture yielding a started :class:`CovalentServer` on the ``local_stack``
    fixture's stack. ``executor_config`` goes to ``[executors.awslambda]`` of its
    covalent.conf; ``lambdarun_toml`` becomes the server's ``LAMBDARUN_CONFIG`` file."""
    import pytest

    @pytest.fixture(scope=scope)  # type: ignore[misc]
    def _covalent_server(tmp_path_factory: Any, local_stack: Any) -> Iterator[CovalentServer]:
        root = tmp_path_factory.mktemp("covalent-server")
        environ = {"LAMBDARUN_TARGET": "local", "LAMBDARUN_LOCAL__STATE_DIR": str(local_stack.state_dir)}
        if lambdarun_toml is not None:
            (root / "lambdarun.toml").write_text(lambdarun_toml)
            environ["LAMBDARUN_CONFIG"] = str(root / "lambdarun.toml")
        server = CovalentServer(root, environ)
        if executor_config:
            server.write_executor_config(executor_config)
        try:
            server.start(cluster=cluster, workers=workers)
            yield server
        finally:
            left = server.stop()
            assert not left, f"covalent stop left processes {left} (killed now)"

    return _covalent_server


def lattice_nodes(result: Any) -> dict[str, dict[str, Any]]:
    """``{electron name: {status, error, stdout, stderr, output}}`` of a Covalent result."""
    graph = result.lattice.transport_graph
    out: dict[str, dict[str, Any]] = {}
    for node in graph._graph.nodes:
        name = graph.get_node_value(node, "name")
        out[name] = {key: graph.get_node_value(node, key) for key in ("status", "error", "stdout", "stderr", "output")}
    return out
