"""Calls and their outcomes on the wire: what ``run`` ships and what comes back.

Client side: :func:`encode_call` packs ``func(*args, **kwargs)`` into a signed envelope, and
:func:`decode_outcome` turns the returned envelope into an :class:`Outcome` whose
:meth:`~Outcome.unwrap` returns the value or raises the function's *own* exception type,
with the remote traceback attached.

Lambda side: :func:`execute_call` verifies and decodes a call envelope, runs it with
stdout/stderr captured, and packs the outcome. An envelope that cannot be trusted or
loaded becomes an outcome carrying the typed lambdarun error, so the caller sees why.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.claims import AttemptGuard
from lambdarun.envelope import Envelope, pack, unpack
from lambdarun.errors import (
    EnvelopeError,
    RemoteControlFlowError,
    RemoteExecutionError,
    RemoteGeneratorExit,
    RemoteKeyboardInterrupt,
    RemoteSystemExit,
    SerializationError,
    UnpicklableArgumentError,
)
from lambdarun.serializers import VERSION_SENSITIVE_TAGS

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
#: stdout/stderr kept per task (the tail is kept when a task prints more)
OUTPUT_LIMIT = 1_048_576


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
            "issued_at": int(time.time()) if issued_at is None else issued_at,
            **(meta or {}),
        },
    )
    return pack(envelope, session.signing_key)


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


def decode_call(session: Session, data: bytes) -> Call:
    """Verify and decode a call envelope (refusing untrusted or unloadable ones)."""
    envelope = unpack(data, session.signing_key)
    if envelope.kind != CALL:
        raise EnvelopeError(f"expected a call envelope, got {envelope.kind!r}")
    envelope.check_python(VERSION_SENSITIVE_TAGS)
    values = [session.decode(part) for part in envelope.parts]
    nargs = envelope.meta["nargs"]
    names = envelope.meta["kwargs"]
    func, args, kw_values = values[0], tuple(values[1 : 1 + nargs]), values[1 + nargs :]
    return Call(func, args, dict(zip(names, kw_values)), dict(envelope.meta))


class _Capture:
    """What one call printed: bounded, keeping the tail when a task prints more."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._size = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            self._chunks.append(text)
            self._size += len(text)
            if self._size > 2 * OUTPUT_LIMIT:
                joined = "".join(self._chunks)[-OUTPUT_LIMIT:]
                self._chunks, self._size = [joined], len(joined)

    def getvalue(self) -> str:
        with self._lock:
            return "".join(self._chunks)[-OUTPUT_LIMIT:]


_current_capture: contextvars.ContextVar[tuple[_Capture, _Capture, bool] | None] = contextvars.ContextVar(
    "lambdarun_capture", default=None
)


class _RoutingStream(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` while calls run.

    A write goes to the capture of the call running in the writer's context (so calls that
    run side by side in one worker, as Temporal activities do, keep their output apart);
    a write from a context with no call (a thread the function started) goes to the only
    call in flight when there is exactly one. Everything is also written to the real
    stream (the Lambda log) unless the call asked for no tee.
    """

    def __init__(self, real: Any, index: int) -> None:
        self.real = real
        self._index = index  # 0: stdout, 1: stderr

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        current = _current_capture.get() or _Routing.only_active()
        tee = True
        if current is not None:
            current[self._index].write(text)
            tee = current[2]
        if tee:
            try:
                self.real.write(text)
            except Exception:
                pass
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self.real.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8")


class _Routing:
    """Installs the routing streams while at least one call runs, and removes them after."""

    lock = threading.Lock()
    active: list[tuple[_Capture, _Capture, bool]] = []
    saved: tuple[Any, Any] | None = None

    @classmethod
    def only_active(cls) -> tuple[_Capture, _Capture, bool] | None:
        active = cls.active
        return active[0] if len(active) == 1 else None

    @classmethod
    @contextlib.contextmanager
    def capture(cls, tee: bool) -> Iterator[tuple[_Capture, _Capture]]:
        entry = (_Capture(), _Capture(), tee)
        with cls.lock:
            if not cls.active:
                cls.saved = (sys.stdout, sys.stderr)
                sys.stdout = _RoutingStream(sys.stdout, 0)
                sys.stderr = _RoutingStream(sys.stderr, 1)
            cls.active.append(entry)
        token = _current_capture.set(entry)
        try:
            yield entry[0], entry[1]
        finally:
            _current_capture.reset(token)
            with cls.lock:
                cls.active.remove(entry)
                if not cls.active and cls.saved is not None:
                    sys.stdout, sys.stderr = cls.saved
                    cls.saved = None


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
    guard = AttemptGuard(session, deadline=deadline, request_id=request_id, attempt=attempt)
    return guard.finish(_execute_call(session, data, tee, guard))


def _execute_call(session: Session, data: bytes, tee: bool, guard: AttemptGuard) -> bytes:
    started = time.perf_counter()
    out = err = _Capture()
    meta: dict[str, Any] = {}
    try:
        call = decode_call(session, data)
        meta = {k: call.meta[k] for k in ("task_id", "attempt") if k in call.meta}
        duplicate = guard.claim(call.meta)
        if duplicate is not None:
            return duplicate
        if guard.retry:  # Lambda's own retry N of this request: a new attempt, recorded as such
            meta["lambda_retry"] = guard.retry
        with _Routing.capture(tee) as (out, err):
            value = call.func(*call.args, **call.kwargs)
    except BaseException as exc:  # the caller gets every failure, typed; control flow stays here
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
    return pack(envelope, session.signing_key)


def pack_failure(
    session: Session,
    exc: BaseException,
    *,
    stdout: str = "",
    stderr: str = "",
    meta: dict[str, Any] | None = None,
    started: float | None = None,
) -> bytes:
    """An outcome envelope carrying ``exc`` (pickled when possible) and its traceback."""
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
    return pack(envelope, session.signing_key)


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


def decode_outcome(session: Session, data: bytes) -> Outcome:
    """Decode an outcome envelope; the exception (if any) gets the remote traceback attached."""
    envelope = unpack(data, session.signing_key)
    if envelope.kind != OUTCOME:
        raise EnvelopeError(f"expected an outcome envelope, got {envelope.kind!r}")
    meta = dict(envelope.meta)
    stdout, stderr = meta.pop("stdout", ""), meta.pop("stderr", "")
    if meta.get("ok"):
        envelope.check_python(VERSION_SENSITIVE_TAGS)
        return Outcome(True, session.decode(envelope.parts[0]), stdout=stdout, stderr=stderr, meta=meta)
    tb = meta.get("traceback", "")
    exc: BaseException | None = None
    if envelope.parts:
        try:
            envelope.check_python(VERSION_SENSITIVE_TAGS)
            candidate = session.decode(envelope.parts[0])
            if isinstance(candidate, BaseException):
                exc = remote_control_flow(candidate, tb)
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteExecutionError(
            f"remote {meta.get('exc_type')}: {meta.get('exc_message')} (the exception could "
            "not be rebuilt here; install the module that defines it to get the original type)",
            original_type=meta.get("exc_type", ""),
            remote_traceback=tb,
        )
    attach_remote_traceback(exc, tb)
    return Outcome(False, exception=exc, stdout=stdout, stderr=stderr, remote_traceback=tb, meta=meta)


def attach_remote_traceback(exc: BaseException, tb: str) -> None:
    """Attach the remote traceback as ``exc.remote_traceback`` and as a note shown by Python."""
    with contextlib.suppress(Exception):
        exc.remote_traceback = tb  # type: ignore[attr-defined]
    if tb:
        with contextlib.suppress(Exception):
            exc.add_note("Remote traceback (on Lambda):\n" + tb.rstrip())
