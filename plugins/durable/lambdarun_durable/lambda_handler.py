"""The Lambda side of a durable execution: run one invocation of the handler an event names.

:func:`handle_durable_event` answers the ``lambdarun_handle_event`` hook inside the
lambdarun runtime function. The handler comes with the event as a signed lambdarun call
envelope (:data:`~lambdarun_durable.events.HANDLER_KEY`, verified like any call) or, for a
function deployed for plain AWS events, from the ``durable.handler`` setting.
"""

from __future__ import annotations

import base64
import json
import importlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lambdarun.calls import decode_call
from lambdarun.errors import ConfigError, EventError, UntrustedLocationError

from lambdarun_durable.config import DurableConfig
from lambdarun_durable.events import HANDLER_KEY, INPUT_KEY
from lambdarun_durable.execution import DurableInvocationInput, durable_execution, is_durable_handler
from lambdarun_durable.records import decode_token

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = ["as_durable_handler", "handle_durable_event"]

_HANDLERS: dict[bytes, Callable] = {}
_HANDLERS_LOCK = threading.Lock()


def as_durable_handler(func: Callable) -> Callable:
    """``func`` as a durable handler (wrapped with :func:`durable_execution` unless it is one)."""
    return func if is_durable_handler(func) else durable_execution(func)


def _import_handler(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"durable.handler {spec!r} must look like 'package.module:function'")
    return as_durable_handler(getattr(importlib.import_module(module_name), attr))


def handle_durable_event(event: dict[str, Any], context: Any, session: Session) -> dict[str, Any]:
    """Run one invocation of the durable handler named by the event (Lambda side)."""
    config: DurableConfig = session.settings.section("durable")
    inv = DurableInvocationInput.from_event(event)
    if _api_token(inv.checkpoint_token):
        return _handle_api_event(event, inv, context, session, config)
    # the token names the checkpoint store; an event never chooses where state is written:
    # only the store this function is configured with (LAMBDARUN_DURABLE__STORE_URL)
    token = decode_token(inv.checkpoint_token)
    store_url, configured = token.get("s") if isinstance(token, dict) else None, config.resolved_store_url()
    if store_url != configured:
        raise UntrustedLocationError(
            f"refused a durable event whose checkpoint token names the store {str(store_url)[:200]!r}: "
            f"this function uses {configured!r} (durable.store_url); nothing was read or written"
        )
    inv.store = session.checkpoint_store(configured)
    handler = _handler(event.get(HANDLER_KEY), session, config)
    inv.batch_records = config.batch_records
    inv.batch_age = config.batch_age
    inv.batching = config.checkpoint_batching
    return handler(inv, context)


def _api_token(token: str) -> bool:
    """Whether ``token`` is a token of Lambda's durable-execution API (the local service's
    or AWS's), not one of lambdarun's own orchestrator (which names its store)."""
    try:
        decoded = decode_token(token)
    except Exception:  # noqa: BLE001 - not ours
        return True
    return not (isinstance(decoded, dict) and "s" in decoded)


def _handle_api_event(event: dict[str, Any], inv: DurableInvocationInput, context: Any, session: Session,
                      config: DurableConfig) -> dict[str, Any]:
    """An invocation by Lambda's durable-execution API: the service owns the execution, the
    handler checkpoints through CheckpointDurableExecution; the signed handler envelope is in
    the execution's input (the EXECUTION operation, always the first one)."""
    ops = (event.get("InitialExecutionState") or {}).get("Operations") or []
    exec_op = next((op for op in ops if isinstance(op, dict) and op.get("Type") == "EXECUTION"), None)
    payload = ((exec_op or {}).get("ExecutionDetails") or {}).get("InputPayload")
    try:
        body = json.loads(payload) if payload else None
    except ValueError:
        body = None
    envelope = body.get(HANDLER_KEY) if isinstance(body, dict) else None
    handler = _handler(envelope, session, config)
    if envelope:
        inv.extra["input_key"] = INPUT_KEY  # the handler's own event is inside
    inv.batch_records = config.batch_records
    inv.batch_age = config.batch_age
    inv.batching = config.checkpoint_batching
    return handler(inv, context)


def _handler(envelope: Any, session: Session, config: DurableConfig) -> Callable:
    """The handler of an invocation: the verified envelope's, else ``durable.handler``."""
    if envelope:
        if not isinstance(envelope, str):
            raise EventError(f"event field {HANDLER_KEY!r} must be a base64 string, not {type(envelope).__name__}")
        try:
            data = base64.b64decode(envelope, validate=True)
        except ValueError as exc:
            raise EventError(f"event field {HANDLER_KEY!r} is not valid base64 ({exc}); nothing ran") from exc
        with _HANDLERS_LOCK:
            handler = _HANDLERS.get(data)
        if handler is None:
            # verified like any call; no age limit: the handler envelope is stored with its
            # execution on purpose and sent again with every invocation (possibly days later)
            handler = as_durable_handler(decode_call(session, data, max_age=None).func)
            with _HANDLERS_LOCK:
                if len(_HANDLERS) > 64:
                    _HANDLERS.clear()
                _HANDLERS[data] = handler
        return handler
    if config.handler:
        return _import_handler(config.handler)
    raise ConfigError(
        "durable invocation event without a handler: send it through the durable backend, "
        "or set durable.handler = 'module:function' for this function"
    )
