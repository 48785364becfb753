"""A real Covalent server (`covalent start`), lattices dispatched to it, results read back
with ``ct.get_result``: the path a Covalent user takes.

The server runs in its own private HOME / XDG / Covalent directories, on a free port bound to
127.0.0.1, without a Dask cluster, with ``LAMBDARUN_TARGET=local`` and the test session's
local stack (``LAMBDARUN_LOCAL__STATE_DIR``), and is stopped with ``covalent stop`` after the
module; the test then checks that none of its processes is left.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import covalent as ct
import psutil
import pytest

from lambdarun_covalent.executor import AWSLambdaExecutor

pytestmark = pytest.mark.timeout(300)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: the function the server's by-name electrons use (set in its covalent.conf)
SERVER_FUNCTION = "lambdarun-covalent-server-tests"
#: a tiny pure-Python package from pip's configured index, not installed in this environment
DEP = "mergedeep==1.3.4"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _covalent_cli() -> str:
    cli = Path(sys.executable).with_name("covalent")
    return str(cli) if cli.exists() else shutil.which("covalent") or "covalent"


class CovalentServer:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.address = ""
        self.pids: set[int] = set()

    @property
    def config_file(self) -> Path:
        return Path(self.env["COVALENT_CONFIG_DIR"]) / "covalent.conf"

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_covalent_cli(), *args, "--no-header", "--no-footer"],
            env=self.env, cwd=self.root, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def start(self, port: int) -> None:
        proc = self.cli("start", "--port", str(port), "--no-cluster")
        pidfile = Path(self.env["COVALENT_CACHE_DIR"]) / "ui.pid"
        if pidfile.exists():  # remember every process of the server, to check none is left
            with_children = psutil.Process(int(pidfile.read_text().strip()))
            self.pids = {with_children.pid, *(c.pid for c in with_children.children(recursive=True))}
        if proc.returncode != 0 or "Running" not in proc.stdout:
            log = Path(self.env["COVALENT_LOGDIR"]) / "covalent_ui.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"covalent start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{tail}")
        config = tomllib.loads(self.config_file.read_text())
        self.address = f"http://127.0.0.1:{config['dispatcher']['port']}"

    def stop(self) -> list[int]:
        self.cli("stop", timeout=60)
        deadline = time.monotonic() + 30
        alive = [p for p in self.pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        for pid in alive:  # never leave an orphan, but report it
            psutil.Process(pid).kill()
        return alive


@pytest.fixture(scope="module")
def covalent_server(tmp_path_factory: pytest.TempPathFactory, local_stack: Any) -> Iterator[CovalentServer]:
    root = tmp_path_factory.mktemp("covalent-server")
    home = root / "home"
    covalent_dirs = {
        "COVALENT_CONFIG_DIR": "config",
        "COVALENT_CACHE_DIR": "cache",
        "COVALENT_DATA_DIR": "data",
        "COVALENT_LOGDIR": "logs",
        "COVALENT_DISPATCH_CACHE_DIR": "dispatches",
        "COVALENT_EXECUTOR_DIR": "executors",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVALENT_", "LAMBDARUN_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        COVALENT_DISPATCHER_ADDR="127.0.0.1",
        COVALENT_DATABASE=str(root / "data" / "dispatcher_db.sqlite"),
        COVALENT_HEARTBEAT_FILE=str(root / "cache" / "heartbeat"),
        LAMBDARUN_TARGET="local",
        LAMBDARUN_LOCAL__STATE_DIR=str(local_stack.state_dir),
    )
    for var, sub in covalent_dirs.items():
        env[var] = str(root / sub)
        (root / sub).mkdir(parents=True, exist_ok=True)
    home.mkdir()
    # Covalent passes [executors.awslambda] to by-name electrons as constructor arguments
    (root / "config" / "covalent.conf").write_text(
        f'[executors.awslambda]\nfunction_name = "{SERVER_FUNCTION}"\ntimeout = 120\n'
    )
    # the server's working directory is Covalent's package: a project's lambdarun.toml is
    # found through LAMBDARUN_CONFIG (README: "Which settings win")
    (root / "lambdarun.toml").write_text("[covalent]\nmemory = 512\n")
    env["LAMBDARUN_CONFIG"] = str(root / "lambdarun.toml")
    server = CovalentServer(root, env)
    try:
        server.start(_free_port())
        yield server
    finally:
        left = server.stop()
        assert not left, f"covalent stop left processes {left}"


def _nodes(result: Any) -> dict[str, dict[str, Any]]:
    graph = result.lattice.transport_graph
    out = {}
    for node in graph._graph.nodes:
        name = graph.get_node_value(node, "name")
        out[name] = {key: graph.get_node_value(node, key) for key in ("status", "error", "stdout", "stderr")}
        out[name]["output"] = graph.get_node_value(node, "output")
    return out


# The server runs without a Dask cluster: lattices post-process with Covalent's "local"
# executor (the default would follow this process's Covalent config)


def _run(server: CovalentServer, lattice: Any, *args: Any) -> Any:
    dispatch_id = ct.dispatch(lattice, dispatcher_addr=server.address)(*args)
    return ct.get_result(dispatch_id, wait=True, dispatcher_addr=server.address)


# -- electrons -------------------------------------------------------------------------------


class MyError(ValueError):
    pass


@ct.electron(executor="awslambda")
def add(a, b):
    print(f"adding {a} and {b}")
    return a + b


@ct.electron(executor="awslambda")
def where_am_i():
    import os

    return {"function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"), "memory": os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")}


@ct.electron(executor=AWSLambdaExecutor(function_name="lambdarun-covalent-instance-tests", timeout=60))
def square_on_instance(x):
    import os

    print(f"squaring {x}")
    return x * x, os.environ.get("AWS_LAMBDA_FUNCTION_NAME")


@ct.electron(executor="awslambda")
def fails(x):
    import sys

    print(f"about to fail on {x}")
    print("careful", file=sys.stderr)
    raise MyError(f"bad value {x}")


@ct.electron(executor="awslambda", deps_pip=ct.DepsPip(packages=[DEP]))
def with_dependency(a, b):
    import mergedeep

    return mergedeep.merge({}, a, b), mergedeep.__file__


@ct.electron(executor="local")
def plain(x):
    return x + 1


@ct.lattice(workflow_executor="local")
def by_name(a, b):
    return add(add(a, b), where_am_i() and 0)


@ct.lattice(workflow_executor="local")
def by_instance(x):
    return square_on_instance(x)


@ct.lattice(workflow_executor="local")
def failing(x):
    return fails(x)


@ct.lattice(workflow_executor="local")
def needs_a_package(a, b):
    return with_dependency(a, b)


@ct.lattice(workflow_executor="local")
def plain_lattice(x):
    return plain(x)


# -- tests ------------------------------------------------------------------------------------


def test_server_listens_on_loopback_only(covalent_server):
    port = int(covalent_server.address.rsplit(":", 1)[1])
    listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    assert listening == {"127.0.0.1"}


def test_dispatch_is_accepted(covalent_server):
    """Covalent's client posts JSON without a Content-Type: with FastAPI >= 0.132 every
    dispatch is refused with HTTP 422 (the covalent extra pins fastapi<0.132)."""
    result = _run(covalent_server, plain_lattice, 1)
    assert str(result.status) == "COMPLETED" and result.result == 2, _nodes(result)


def test_electrons_by_executor_name(covalent_server):
    result = _run(covalent_server, by_name, 20, 1)
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == 21
    nodes = _nodes(result)
    assert nodes["add"]["stdout"] in ("adding 20 and 1\n", "adding 21 and 0\n")
    # covalent.conf's [executors.awslambda] and the server's lambdarun.toml reached the
    # executor Covalent built by name
    assert nodes["where_am_i"]["output"].get_deserialized() == {"function": SERVER_FUNCTION, "memory": "512"}


def test_electron_with_an_executor_instance(covalent_server):
    result = _run(covalent_server, by_instance, 7)
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == [49, "lambdarun-covalent-instance-tests"] or result.result == (49, "lambdarun-covalent-instance-tests")
    assert _nodes(result)["square_on_instance"]["stdout"] == "squaring 7\n"


def test_failing_electron_shows_type_traceback_and_output(covalent_server):
    result = _run(covalent_server, failing, 21)
    assert str(result.status) == "FAILED"
    node = _nodes(result)["fails"]
    assert str(node["status"]) == "FAILED"
    assert node["stdout"] == "about to fail on 21\n"
    stderr = node["stderr"]
    assert stderr.startswith("careful\nTraceback (most recent call last):\n"), stderr
    assert ", in fails\n" in stderr  # the remote frame of the electron
    assert stderr.rstrip().endswith("MyError: bad value 21"), stderr


def test_deps_pip_electron_runs_from_a_cached_layer(covalent_server):
    import importlib.util

    assert importlib.util.find_spec("mergedeep") is None  # not in this environment: the layer brings it
    result = _run(covalent_server, needs_a_package, {"a": 1}, {"b": 2})
    assert str(result.status) == "COMPLETED", (result.error, _nodes(result)["with_dependency"])
    merged, module_file = result.result
    assert merged == {"a": 1, "b": 2}
    layers = Path(covalent_server.env["XDG_CACHE_HOME"]) / "lambdarun" / "covalent-layers"
    assert Path(module_file).is_relative_to(layers)
    assert importlib.util.find_spec("mergedeep") is None  # nothing was installed here
    # a second run uses the cached layer (no new layer directory)
    before = sorted(p.name for p in layers.iterdir() if p.is_dir())
    again = _run(covalent_server, needs_a_package, {"c": 3}, {})
    assert str(again.status) == "COMPLETED" and again.result[0] == {"c": 3}
    assert sorted(p.name for p in layers.iterdir() if p.is_dir()) == before
