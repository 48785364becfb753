"""The lambdarun plugin of ``lambdarun-covalent``: backend ``covalent``, section ``[covalent]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.backends import BackendRegistry
    from lambdarun.config import ConfigRegistry


@hookimpl
def lambdarun_register_backends(register: BackendRegistry) -> None:
    from lambdarun_covalent.backend import CovalentBackend

    register.add_backend(CovalentBackend)


@hookimpl
def lambdarun_register_config(register: ConfigRegistry) -> None:
    from lambdarun_covalent.config import CovalentConfig

    register.add_section("covalent", CovalentConfig)
