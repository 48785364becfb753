"""A real Covalent server (`covalent start`), lattices dispatched to it, results read back
with ``ct.get_result``: the path a Covalent user takes.

The server runs in its own private HOME / XDG / Covalent directories, on a free port bound to
127.0.0.1, without a Dask cluster, with ``LAMBDARUN_TARGET=local`` and the test session's
local stack (``LAMBDARUN_LOCAL__STATE_DIR``), and is stopped with ``covalent stop`` after the
module; the test then checks that none of its processes is left.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cloudpickle
import covalent as ct
import psutil
import pytest

from lambdarun_covalent.executor import AWSLambdaExecutor
from lambdarun_covalent.testing import covalent_server_fixture, lattice_nodes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: the function the server's by-name electrons use (set in its covalent.conf)
SERVER_FUNCTION = "lambdarun-covalent-server-tests"
#: a tiny pure-Python package from pip's configured index, not installed in this environment
DEP = "mergedeep==1.3.4"


covalent_server = covalent_server_fixture(
    "module",
    # Covalent passes [executors.awslambda] to by-name electrons as constructor arguments
    executor_config={"function_name": SERVER_FUNCTION, "timeout": 120},
    # the server's working directory is Covalent's package: a project's lambdarun.toml is
    # found through LAMBDARUN_CONFIG (README: "Which settings win")
    lambdarun_toml="[covalent]\nmemory = 512\n",
)
_nodes = lattice_nodes


# The server runs without a Dask cluster: lattices post-process with Covalent's "local"
# executor (the default would follow this process's Covalent config)


def _run(server: Any, lattice: Any, *args: Any) -> Any:
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


@ct.electron(executor=AWSLambdaExecutor(function_name="lambdarun-covalent-instance-tests", timeout=1))
def too_slow(seconds):
    import time

    time.sleep(seconds)
    return seconds


@ct.electron(executor="local")
def plain(x):
    return x + 1


@ct.lattice(workflow_executor="local")
def by_name(a, b):
    return {"sum": add(add(a, b), 0), "where": where_am_i()}


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
def slow_lattice(seconds):
    return too_slow(seconds)


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
    # covalent.conf's [executors.awslambda] and the server's lambdarun.toml reached the
    # executor Covalent built by name
    assert result.result == {"sum": 21, "where": {"function": SERVER_FUNCTION, "memory": "512"}}
    graph = result.lattice.transport_graph
    outputs = sorted(graph.get_node_value(n, "stdout") for n in graph._graph.nodes
                     if graph.get_node_value(n, "name") == "add")
    assert outputs == ["adding 20 and 1\n", "adding 21 and 0\n"]


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


@pytest.mark.network
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


def test_timeout_names_the_electron_and_covalents_settings(covalent_server):
    result = _run(covalent_server, slow_lattice, 30)
    node = _nodes(result)["too_slow"]
    assert str(node["status"]) == "FAILED"
    assert "electron 'too_slow'" in node["error"] and "timeout of 1 s" in node["error"]
    assert "AWSLambdaExecutor(timeout=...)" in node["error"] and "[executors.awslambda]" in node["error"]
    assert "partial" not in node["error"]
