"""The lambdarun plugin of ``lambdarun-temporal``: backend ``temporal``, section ``[temporal]``,
and the Lambda-side handling of worker events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambdarun.hookspecs import hookimpl
from lambdarun_temporal.companion import lambdarun_local_companions  # noqa: F401 - local up --with temporal
from lambdarun_temporal.dashboard import lambdarun_dashboard_pages  # noqa: F401 - its dashboard page
from lambdarun_temporal.deploy import lambdarun_deploy_resources  # noqa: F401 - the invoke role

if TYPE_CHECKING:
    from lambdarun.backends import BackendRegistry
    from lambdarun.config import ConfigRegistry
    from lambdarun.session import Session


@hookimpl
def lambdarun_register_backends(register: BackendRegistry) -> None:
    from lambdarun_temporal.backend import TemporalBackend

    register.add_backend(TemporalBackend)


@hookimpl
def lambdarun_register_config(register: ConfigRegistry) -> None:
    from lambdarun_temporal.config import TemporalConfig

    register.add_section("temporal", TemporalConfig)


@hookimpl
def lambdarun_handle_event(event: Any, context: Any, session: Session) -> dict[str, Any] | None:
    # checked here so that other events never import temporalio
    if isinstance(event, dict) and not event and _server_invokes(session):
        # Serverless Workers: the Temporal server invokes with an empty event; what the
        # worker serves is this function's own [temporal] configuration
        from lambdarun_temporal.worker import handle_server_invocation

        return handle_server_invocation(context, session)
    if not (isinstance(event, dict) and event.get("lambdarun_temporal") == 1):
        return None
    from lambdarun_temporal.worker import handle_worker_event

    return handle_worker_event(event, context, session)


def _server_invokes(session: Session) -> bool:
    try:
        return session.settings.section("temporal").worker_controller == "server"
    except Exception:  # noqa: BLE001 - no [temporal] section: not a temporal worker function
        return False
