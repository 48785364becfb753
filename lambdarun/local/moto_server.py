"""moto's server for the local stack: a ``ThreadedMotoServer`` on 127.0.0.1 with TCP_NODELAY,
behind the signed-only front (:class:`~lambdarun.local.auth.MotoFront`) and, for a persisting
stack, the journal of its writes (:mod:`.moto_journal`)."""

from __future__ import annotations

import socket
from typing import Any

import structlog

from lambdarun.errors import TargetError
from lambdarun.local import auth
from lambdarun.local.auth import StackCredentials
from lambdarun.local.moto_journal import JournalMiddleware, MotoJournal
from lambdarun.local.state_files import quarantine
from lambdarun.local.sts_trust import TrustPolicyGate, issued_credentials

log = structlog.get_logger(__name__)


class NoDelayQuietHandler:
    """Mix-in for werkzeug request handlers: TCP_NODELAY on the connection (Nagle plus
    delayed ACKs cost ~40 ms per response on loopback, see FACTS) and no access log.
    Used by moto's server here and by the dashboard."""

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
        except OSError:  # pragma: no cover
            pass

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def start_moto(port: int, credentials: StackCredentials, journal: MotoJournal | None = None) -> Any:
    """A ``ThreadedMotoServer`` on 127.0.0.1 whose connections use TCP_NODELAY, behind
    :class:`~lambdarun.local.auth.MotoFront` (signed requests only, no browsers, no CORS).

    With a ``journal``, its entries are replayed into moto before the server listens, and
    every successful (authenticated) write is appended to it from then on (see :mod:`.persist`)."""
    try:
        import awslambdaric  # noqa: F401 - the runtime client every environment runs
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    except ImportError as exc:
        raise TargetError(
            f"the local target needs the 'local' extra ({exc.name} is not installed): "
            "pip install 'lambdarun[local]', or set target = \"aws\""
        ) from exc
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    handler = type("NoDelayMotoHandler", (NoDelayQuietHandler, MotoRequestHandler), {})

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app: Any = DomainDispatcherApplication(create_backend_app)
            if journal is not None:
                try:
                    replayed, failed = journal.replay(app)
                except Exception as e:  # never keep the server from starting: set it aside
                    log.error("moto journal could not be replayed; moved aside, moto starts empty",
                              error=f"{type(e).__name__}: {e}")
                    quarantine(journal.path, f"replay failed: {type(e).__name__}: {e}")
                    replayed = failed = 0
                if replayed or failed:
                    log.info("moto state restored from its journal", replayed=replayed, failed=failed)
                journal.open()
                app = JournalMiddleware(app, journal)
            app = TrustPolicyGate(app, issued_credentials(credentials.access_key_id))
            app = auth.MotoFront(app, auth.SigV4Verifier(credentials))
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=handler
            )
            self._server_ready_event.set()
            self._server.serve_forever(poll_interval=0.05)

    server = Server(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server
