"""The local target: a Lambda service on 127.0.0.1 that runs real handlers, plus moto.

Public surface::

    from lambdarun.local import LocalStack

    with LocalStack(state_dir="/tmp/lr") as stack:
        lam = stack.client("lambda")          # boto3, the stack's own credentials
        stack.endpoints.lambda_, stack.endpoints.s3

See :mod:`lambdarun.local.service` for what the Lambda API supports (and which module holds
what), :mod:`lambdarun.local.plugin` for the ``local`` target and
:mod:`lambdarun.local.testing` for pytest fixtures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lambdarun.local.auth import StackCredentials
    from lambdarun.local.options import LOCAL_CODE_BUCKETS, ServiceOptions
    from lambdarun.local.service import LambdaService
    from lambdarun.local.stack import LocalStack
    from lambdarun.local.stack_info import (
        Endpoints,
        LocalStackUnavailableError,
        StackInfo,
        default_state_dir,
        read_stack_info,
    )

#: each public name and the module that owns it. Imported on first use (PEP 562), so that a
#: process that only talks to a stack (a Lambda environment's runtime, a caller whose stack
#: runs in its own process) never imports the service's modules: a cold start imports what
#: it uses.
_OWNERS = {
    "Endpoints": "lambdarun.local.stack_info",
    "LOCAL_CODE_BUCKETS": "lambdarun.local.options",
    "LambdaService": "lambdarun.local.service",
    "LocalStack": "lambdarun.local.stack",
    "LocalStackUnavailableError": "lambdarun.local.stack_info",
    "ServiceOptions": "lambdarun.local.options",
    "StackCredentials": "lambdarun.local.auth",
    "StackInfo": "lambdarun.local.stack_info",
    "default_state_dir": "lambdarun.local.stack_info",
    "read_stack_info": "lambdarun.local.stack_info",
}


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(owner), name)
    globals()[name] = value
    return value


__all__ = [
    "Endpoints",
    "LOCAL_CODE_BUCKETS",
    "LambdaService",
    "LocalStack",
    "LocalStackUnavailableError",
    "ServiceOptions",
    "StackCredentials",
    "StackInfo",
    "default_state_dir",
    "read_stack_info",
]
