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
