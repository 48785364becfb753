"""The lambdarun plugin of ``lambdarun-durable``.

Hooks: backend ``durable``, config section ``[durable]``, checkpoint stores
(``sqlite://``, ``dynamodb://``, ``s3://``), the Lambda-side handling of durable
invocation events, the ``lambdarun durable`` commands, and what ``lambdarun deploy``
creates for it (its DynamoDB checkpoint table, :mod:`lambdarun_durable.deploy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lambdarun.hookspecs import hookimpl
from lambdarun_durable.dashboard import lambdarun_dashboard_pages  # noqa: F401 - its dashboard page
from lambdarun_durable.deploy import lambdarun_deploy_resources  # noqa: F401 - its checkpoint table
from lambdarun_durable.local_api import lambdarun_lambda_service_extensions  # noqa: F401 - the local service's durable API
from lambdarun_durable.events import HANDLER_KEY, is_durable_event  # noqa: F401 - their former home

if TYPE_CHECKING:
    from lambdarun.backends import BackendRegistry
    from lambdarun.config import ConfigRegistry
    from lambdarun.session import Session

@hookimpl
def lambdarun_register_backends(register: BackendRegistry) -> None:
    from lambdarun_durable.backend import DurableBackend

    register.add_backend(DurableBackend)


@hookimpl
def lambdarun_register_config(register: ConfigRegistry) -> None:
    from lambdarun_durable.config import DurableConfig

    register.add_section("durable", DurableConfig)


@hookimpl
def lambdarun_make_checkpoint_store(url: str, session: Session) -> Any:
    if urlparse(url).scheme not in ("sqlite", "dynamodb", "s3"):
        return None
    from lambdarun_durable.stores import open_store

    return open_store(url, session)


@hookimpl
def lambdarun_handle_event(event: Any, context: Any, session: Session) -> dict[str, Any] | None:
    """Answer AWS-shaped durable invocation events inside the lambdarun runtime function."""
    if not is_durable_event(event):
        return None
    from lambdarun_durable.lambda_handler import handle_durable_event

    return handle_durable_event(event, context, session)


@hookimpl
def lambdarun_add_commands(cli: Any) -> None:
    from lambdarun_durable.cli import durable

    cli.add_command(durable)


# AWS's SDK names its instrumentation plugin interface ``plugin``; here that name is the lambdarun
# pluggy plugin, so the interface lives in :mod:`lambdarun_durable.instrumentation` (a port of
# AWS's ``plugin.py``) and its public names are importable from here as from AWS's module.
from lambdarun_durable.instrumentation import (  # noqa: E402,F401 - AWS's plugin module names
    DurableInstrumentationPlugin,
    DurableInstrumentationPluginFactory,
    InvocationEndInfo,
    InvocationInfo,
    InvocationStartInfo,
    InvocationStatus,
    OperationChangeInfo,
    OperationEndInfo,
    OperationInfo,
    OperationStartInfo,
    OperationType,
    PluginExecutor,
    PluginHost,
    PropagationInput,
    PropagationMetadata,
    UserFunctionEndInfo,
    UserFunctionOutcome,
    UserFunctionStartInfo,
)
