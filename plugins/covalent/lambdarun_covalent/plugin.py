"""The lambdarun plugin of ``lambdarun-covalent``: backend ``covalent``, section ``[covalent]``,
and the role permission ``lambdarun deploy`` grants for it (:mod:`lambdarun_covalent.deploy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambdarun.hookspecs import hookimpl
from lambdarun_covalent.deploy import lambdarun_deploy_resources  # noqa: F401 - its role statement

if TYPE_CHECKING:
    from lambdarun.backends import BackendRegistry
    from lambdarun.config import ConfigRegistry
    from lambdarun.session import Session


@hookimpl
def lambdarun_register_backends(register: BackendRegistry) -> None:
    from lambdarun_covalent.backend import CovalentBackend

    register.add_backend(CovalentBackend, default=True)


@hookimpl
def lambdarun_register_config(register: ConfigRegistry) -> None:
    from lambdarun_covalent.config import CovalentConfig

    register.add_section("covalent", CovalentConfig)


@hookimpl
def lambdarun_handle_event(event: Any, context: Any, session: Session) -> Any:
    """Lambda side: turn the failure record of an asynchronous call into its outcome, and
    answer the version probe (:mod:`lambdarun_covalent.versions`)."""
    from lambdarun_covalent.runtime import handle_failure_record, is_failure_record
    from lambdarun_covalent.versions import answer_probe

    if is_failure_record(event):
        return handle_failure_record(event, session)
    return answer_probe(event)
