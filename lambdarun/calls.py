"""Calls and their outcomes on the wire: what ``run`` ships and what comes back.

Client side: :func:`encode_call` packs ``func(*args, **kwargs)`` into a signed envelope, and
:func:`decode_outcome` turns the returned envelope into an :class:`Outcome` whose
:meth:`~Outcome.unwrap` returns the value or raises the function's *own* exception type,
with the remote traceback attached.

Lambda side: :func:`execute_call` verifies and decodes a call envelope, runs it with
stdout/stderr captured, and packs the outcome. An envelope that cannot be trusted or
loaded becomes an outcome carrying the typed lambdarun error, so the caller sees why.

Both directions are signed (the session's :attr:`~lambdarun.session.Session.signing_key`)
and expire (``envelope_max_age``). An outcome carries the ``task_id`` and ``attempt`` of
its call inside the signed part, and :func:`decode_outcome` checks them before anything
is unpickled. Without a key nothing is sent or accepted unless ``allow_unsigned`` is set.
"""

from __future__ import annotations

import contextlib
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun import errors as _errors
from lambdarun.claims import AttemptGuard
from lambdarun.envelope import ISSUED, Envelope, check_age, pack, unpack
from lambdarun.errors import (
    EnvelopeError,
    OutcomeMismatchError,
    RemoteControlFlowError,
    RemoteExecutionError,
    RemoteGeneratorExit,
    RemoteKeyboardInterrupt,
    RemoteSystemExit,
    SerializationError,
    SigningKeyMissingError,
    UnpicklableArgumentError,
)
from lambdarun.output import OUTPUT_LIMIT, Capture, capture_output  # noqa: F401 - OUTPUT_LIMIT re-exported

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = [
    "encode_call",
    "decode_call",
    "execute_call",
    "pack_failure",
    "decode_outcome",
    "Outcome",
    "Call",
]

CALL = "call"
OUTCOME = "outcome"
#: ``max_age`` default: the session's ``envelope_max_age``
_CONFIGURED = object()


def signing_key(session: Session) -> bytes | None:
    """The key to sign and verify with, or None when running unsigned is allowed.

    Raises :class:`SigningKeyMissingError` when there is no key and ``allow_unsigned`` is
    not set: nothing is then sent or accepted.
    """
    key = session.signing_key
    if key is None and not session.settings.allow_unsigned:
        raise SigningKeyMissingError(
            "no signing key is configured, so lambdarun neither sends nor accepts envelopes "
            "(unsigned ones would let anyone who can invoke the function run code in it). "
            "Configure the key: signing_key_secret = '<secret ARN>' (the secret `lambdarun "
            "deploy` created; a function gets it as LAMBDARUN_SIGNING_KEY_SECRET) or "
            "signing_key = '<at least 32 bytes>' on the caller; on the local target the stack "
            "provides one. To run unsigned anyway set allow_unsigned = true on both sides "
            "(see docs/security.md)"
        )
    return key


def _max_age(session: Session, max_age: Any) -> float | None:
    return session.settings.envelope_max_age if max_age is _CONFIGURED else max_age


def _describe_callable(func: Any) -> str:
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{name}"


def encode_call(
    session: Session,
    func: Callable[..., Any],
    args: tuple = (),
    kwargs: dict[str, Any] | None = None,
    *,
    task_id: str | None = None,
    attempt: int = 1,
    issued_at: int | None = None,
    meta: dict[str, Any] | None = None,
) -> bytes:
    """Pack a call; an unserializable argument raises :class:`UnpicklableArgumentError`
    naming its position (or keyword) and the object.

    Every call carries its identity: ``task_id`` (a fresh random id when not given) and
    ``attempt`` (1 for the first try; a retry the caller makes is ``attempt + 1``), and
    ``issued_at`` (epoch seconds, now when not given: where the claim is filed). The
    Lambda side runs each (task id, attempt) at most once (:mod:`lambdarun.claims`).
    """
    kwargs = kwargs or {}
    if not callable(func):
        raise TypeError(f"lambdarun needs a callable, got {type(func).__qualname__}")
    name = _describe_callable(func)
    parts = []

    def encode(value: Any, what: Callable[[], str]) -> None:
        try:
            parts.append(session.encode(value))
        except SerializationError as exc:
            raise UnpicklableArgumentError(f"{what()} of {name}() cannot be serialized: {exc}") from exc

    encode(func, lambda: "the function itself")
    for position, value in enumerate(args):
        encode(value, lambda: f"argument {position} ({_short_repr(value)})")
    for key, value in kwargs.items():
        encode(value, lambda: f"keyword argument {key!r} ({_short_repr(value)})")
    envelope = Envelope(
        kind=CALL,
        parts=tuple(parts),
        meta={
            "function": name,
            "nargs": len(args),
            "kwargs": list(kwargs),
            "task_id": task_id or uuid.uuid4().hex,
            "attempt": attempt,
            ISSUED: int(time.time()) if issued_at is None else issued_at,  # also the envelope's
            **(meta or {}),
        },
    )
    return pack(envelope, signing_key(session))


def _short_repr(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    text = f"{type(value).__qualname__} {text}" if not text.startswith(type(value).__qualname__) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


@attrs.frozen
class Call:
    func: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any]
    meta: dict[str, Any]


def decode_call(session: Session, data: bytes, *, max_age: Any = _CONFIGURED) -> Call:
    """Verify and decode a call envelope (refusing untrusted, expired or unloadable ones).

    :param max_age: seconds after its issue time the call is accepted (default: the
        session's ``envelope_max_age``; None: no limit, for envelopes stored on purpose).

    An error raised once the envelope is verified carries ``call_meta`` (its task id and
    attempt), so the refusal can be bound to the task like any outcome.
    """
    envelope = unpack(data, signing_key(session))
    if envelope.kind != CALL:
        raise EnvelopeError(f"expected a call envelope, got {envelope.kind!r}")
    meta = dict(envelope.meta)
    try:
        limit = _max_age(session, max_age)
        if limit is not None:
            check_age(envelope, limit)
        nargs, names = meta.get("nargs"), meta.get("kwargs")
        if not (
            isinstance(nargs, int)
            and not isinstance(nargs, bool)
            and nargs >= 0
            and isinstance(names, list)
            and all(isinstance(n, str) for n in names)
            and len(envelope.parts) == 1 + nargs + len(names)
        ):
            raise EnvelopeError(
                "corrupt call envelope: nargs/kwargs do not match its parts; both sides must run "
                "the same lambdarun"
            )
        envelope.check_python()
        values = [session.decode(part) for part in envelope.parts]
    except BaseException as exc:
        exc.call_meta = bound_meta(meta)  # type: ignore[attr-defined]
        raise
    func, args, kw_values = values[0], tuple(values[1 : 1 + nargs]), values[1 + nargs :]
    return Call(func, args, dict(zip(names, kw_values)), meta)


def bound_meta(meta: Any) -> dict[str, Any]:
    """The task id and attempt of a call's meta, copied into its outcome."""
    if not isinstance(meta, dict):
        return {}
    return {k: meta[k] for k in ("task_id", "attempt") if k in meta}


def execute_call(
    session: Session,
    data: bytes,
    *,
    tee: bool = True,
    deadline: float | None = None,
    request_id: str | None = None,
    attempt: int | None = None,
) -> bytes:
    """Run a call envelope and return the outcome envelope (never raises for user errors).

    The call's attempt is claimed first (:mod:`lambdarun.claims`): a second delivery of
    the same attempt does not run the function, it gets the first delivery's outcome (waiting
    until ``deadline``, a ``time.monotonic()`` value) or a typed error. ``request_id`` is
    the Lambda request id of this delivery. ``attempt`` replaces the envelope's attempt
    number when the runner numbers its retries itself (a Temporal activity's attempt: each
    retry is a new attempt, claimed as such).
    """
    guard = AttemptGuard(session, pack_failure=pack_failure, deadline=deadline, request_id=request_id, attempt=attempt)
    return guard.finish(_execute_call(session, data, tee, guard))


def _execute_call(session: Session, data: bytes, tee: bool, guard: AttemptGuard) -> bytes:
    started = time.perf_counter()
    out = err = Capture()
    meta: dict[str, Any] | None = None  # None until the call is verified and decoded
    try:
        call = decode_call(session, data)
        meta = bound_meta(call.meta)
        duplicate = guard.claim(call.meta)
        if duplicate is not None:
            return duplicate
        if guard.retry:  # Lambda's own retry N of this request: a new attempt, recorded as such
            meta["lambda_retry"] = guard.retry
        with capture_output(tee) as (out, err):
            value = call.func(*call.args, **call.kwargs)
    except BaseException as exc:  # the caller gets every failure, typed; control flow stays here
        if meta is None:  # refused: bound to the task only when the envelope was verified
            meta = getattr(exc, "call_meta", None)
            meta = {"refused": True} if meta is None else meta
        return pack_failure(session, exc, stdout=out.getvalue(), stderr=err.getvalue(), meta=meta, started=started)
    try:
        part = session.encode(value)
    except SerializationError as exc:
        failure = SerializationError(f"the function's result cannot be serialized: {exc}")
        return pack_failure(session, failure, stdout=out.getvalue(), stderr=err.getvalue(), meta=meta, started=started)
    envelope = Envelope(
        kind=OUTCOME,
        parts=(part,),
        meta={
            "ok": True,
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "duration": time.perf_counter() - started,
            **meta,
        },
    )
    return pack(envelope, signing_key(session))


def pack_failure(
    session: Session,
    exc: BaseException,
    *,
    stdout: str = "",
    stderr: str = "",
    meta: dict[str, Any] | None = None,
    started: float | None = None,
) -> bytes:
    """An outcome envelope carrying ``exc`` (pickled when possible) and its traceback.

    ``meta`` binds it to its call (``task_id``, ``attempt``); a refusal of a call that could
    not be verified carries ``{"refused": True}`` instead, and the caller rebuilds it from
    its type name and message only (see :func:`decode_outcome`).

    Without a usable signing key the outcome goes unsigned (the caller refuses it unless it
    allows unsigned envelopes too): the reason still reaches the caller's error message.
    """
    tb = "".join(traceback.format_exception(exc))
    exc_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
    exc = remote_control_flow(exc, tb)
    parts: tuple = ()
    try:
        exc.__traceback__ = None
        parts = (session.encode(exc),)
    except Exception:
        parts = ()  # the caller falls back to RemoteExecutionError naming the type
    envelope = Envelope(
        kind=OUTCOME,
        parts=parts,
        meta={
            "ok": False,
            "exc_type": exc_type,
            "exc_message": _safe_str(exc),
            "traceback": tb,
            "stdout": stdout,
            "stderr": stderr,
            "duration": 0.0 if started is None else time.perf_counter() - started,
            **(meta or {}),
        },
    )
    try:
        key = signing_key(session)
    except Exception:
        key = None
    return pack(envelope, key)


_CONTROL_FLOW: dict[type[BaseException], type[RemoteControlFlowError]] = {
    SystemExit: RemoteSystemExit,
    KeyboardInterrupt: RemoteKeyboardInterrupt,
    GeneratorExit: RemoteGeneratorExit,
}


def remote_control_flow(exc: BaseException, tb: str = "") -> BaseException:
    """``exc`` itself, or, for an exception that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``, other ``BaseException`` subclasses), the
    :class:`~lambdarun.errors.RemoteControlFlowError` standing for it: control flow raised
    by the remote function never acts as control flow on either side."""
    if isinstance(exc, Exception):
        return exc
    kind = next((cls for base, cls in _CONTROL_FLOW.items() if isinstance(exc, base)), RemoteControlFlowError)
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if kind is RemoteSystemExit:
        code = getattr(exc, "code", None)
        args = getattr(exc, "args", ())
        if code is None and args:  # SystemExit's code is its argument(s); some picklers
            code = args[0] if len(args) == 1 else args  # (tblib's, via Covalent) lose .code
        return RemoteSystemExit(
            f"the remote function raised {type(exc).__qualname__} (exit code {code!r}); the "
            "caller does not exit. Return a value or raise an exception instead of exiting.",
            code=code, original_type=name, remote_traceback=tb,
        )
    return kind(
        f"the remote function raised {type(exc).__qualname__}({_safe_str(exc)!r}) on Lambda; it "
        "is reported here as an error and did not interrupt the caller",
        original_type=name, remote_traceback=tb,
    )


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return object.__repr__(exc)


@attrs.frozen
class Outcome:
    """A finished call: its value or exception, and what it printed."""

    ok: bool
    value: Any = None
    exception: BaseException | None = None
    stdout: str = ""
    stderr: str = ""
    remote_traceback: str | None = None
    meta: dict[str, Any] = attrs.field(factory=dict)

    def unwrap(self) -> Any:
        if self.ok:
            return self.value
        assert self.exception is not None
        raise self.exception


def decode_outcome(
    session: Session,
    data: bytes,
    *,
    task_id: str | None,
    attempt: int | None,
    max_age: Any = _CONFIGURED,
) -> Outcome:
    """Verify, bind and decode an outcome envelope.

    The signature, the issue time and the ``task_id``/``attempt`` inside the signed part are
    checked before any part is unpickled: an outcome of another task or attempt raises
    :class:`OutcomeMismatchError`. ``task_id``/``attempt`` are those the call was encoded
    with (None when the call carried none). A refusal of a call the function could not
    verify (no task binding) is raised as its lambdarun error type, rebuilt from its type
    name and message only. The exception of a failed call gets the remote traceback attached.
    """
    envelope = unpack(data, signing_key(session), max_age=_max_age(session, max_age))
    if envelope.kind != OUTCOME:
        raise EnvelopeError(f"expected an outcome envelope, got {envelope.kind!r}")
    meta = dict(envelope.meta)
    if meta.get("refused") is True and "task_id" not in meta and meta.get("ok") is False:
        raise _refusal(meta)
    if (meta.get("task_id"), meta.get("attempt")) != (task_id, attempt):
        raise OutcomeMismatchError(
            f"refused the outcome of task {meta.get('task_id')!r} attempt {meta.get('attempt')!r} "
            f"while waiting for task {task_id!r} attempt {attempt!r}: a stale or foreign (replayed?) "
            "result (nothing in it was loaded)"
        )
    stdout, stderr = meta.pop("stdout", ""), meta.pop("stderr", "")
    if not isinstance(stdout, str) or not isinstance(stderr, str):
        raise EnvelopeError("corrupt outcome envelope: stdout/stderr must be text")
    if meta.get("ok") is True:
        if len(envelope.parts) != 1:
            raise EnvelopeError("corrupt outcome envelope: a value outcome has exactly one part")
        envelope.check_python()
        return Outcome(True, session.decode(envelope.parts[0]), stdout=stdout, stderr=stderr, meta=meta)
    if meta.get("ok") is not False:
        raise EnvelopeError("corrupt outcome envelope: 'ok' must be true or false")
    tb = meta.get("traceback", "")
    tb = tb if isinstance(tb, str) else ""
    exc: BaseException | None = None
    if envelope.parts:
        try:
            envelope.check_python()
            candidate = session.decode(envelope.parts[0])
            if isinstance(candidate, BaseException):
                exc = remote_control_flow(candidate, tb)
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteExecutionError(
            f"remote {meta.get('exc_type')}: {meta.get('exc_message')} (the exception could "
            "not be rebuilt here; install the module that defines it to get the original type)",
            original_type=str(meta.get("exc_type", "")),
            remote_traceback=tb,
        )
    attach_remote_traceback(exc, tb)
    return Outcome(False, exception=exc, stdout=stdout, stderr=stderr, remote_traceback=tb, meta=meta)


def _refusal(meta: dict[str, Any]) -> BaseException:
    """The error of an unbound refusal, rebuilt from text: a lambdarun error type of
    :mod:`lambdarun.errors` by name (nothing is unpickled), else :class:`EnvelopeError`."""
    type_name, message = str(meta.get("exc_type", "")), str(meta.get("exc_message", ""))
    module, _, name = type_name.rpartition(".")
    cls = getattr(_errors, name, None) if module == _errors.__name__ else None
    text = f"the Lambda function refused the call: {message}"
    if isinstance(cls, type) and issubclass(cls, _errors.LambdarunError):
        try:
            return cls(text)
        except Exception:
            pass
    return EnvelopeError(f"{text} ({type_name})")


def attach_remote_traceback(exc: BaseException, tb: str) -> None:
    """Attach the remote traceback as ``exc.remote_traceback`` and as a note shown by Python."""
    with contextlib.suppress(Exception):
        exc.remote_traceback = tb  # type: ignore[attr-defined]
    if tb:
        with contextlib.suppress(Exception):
            exc.add_note("Remote traceback (on Lambda):\n" + tb.rstrip())
