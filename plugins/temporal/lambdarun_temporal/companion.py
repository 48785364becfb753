"""``lambdarun local up --with temporal``: the Temporal dev server next to the local stack, its
Serverless Worker controller invoking the stack's Lambda through the stack's STS.

The server listens on 127.0.0.1 (port 7233 when free, else any free port), keeps its state in
memory and stops with the stack. ``up`` prints where it is (``export TEMPORAL_ADDRESS=...``)
and how to register a worker function as a Serverless Worker version.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from lambdarun.hookspecs import hookimpl

__all__ = ["lambdarun_local_companions", "start_temporal_companion"]

#: Temporal's usual frontend port (what tools connect to by default)
DEFAULT_PORT = 7233


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            return 0
    return DEFAULT_PORT


def start_temporal_companion(stack: Any, echo: Callable[[str], None], *, port: int | None = None) -> Callable[[], None]:
    """Start the dev server for ``stack`` (a started LocalStack); returns its stop function."""
    from lambdarun_temporal.devserver import DevServer, serverless_workers_environment

    endpoints = {"lambda": stack.endpoints.url("lambda"), "sts": stack.endpoints.url("sts")}
    env = serverless_workers_environment(endpoints, stack.region, stack.credentials.environment())
    server = DevServer(port=_port() if port is None else port, worker_controller=True, environment=env).start()
    echo(f"  temporal (dev server, Serverless Workers on this stack): {server.address}")
    echo(f"export TEMPORAL_ADDRESS={server.address}")
    echo("export TEMPORAL_NAMESPACE=default")
    echo("# a worker function becomes a Serverless Worker version with: temporal worker deployment "
         "create-version --deployment-name D --build-id B --aws-lambda-function-arn FUNCTION_ARN "
         "--aws-lambda-assume-role-arn ROLE_ARN --aws-lambda-assume-role-external-id EXTERNAL_ID "
         "(a role of this stack's IAM whose trust policy requires that External ID)")
    return server.stop


@hookimpl
def lambdarun_local_companions(register: dict[str, Any]) -> None:
    register["temporal"] = start_temporal_companion
