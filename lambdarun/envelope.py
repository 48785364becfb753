"""The wire envelope: versioned, msgpack-framed, optionally HMAC-signed.

Layout (bytes)::

    msgpack([MAGIC, FORMAT_VERSION, signature | None])  +  body
    body = msgpack([python "3.11", kind, [[tag, data(, true)], ...], meta, ref])

A part ends with ``true`` when it is version-sensitive (``Encoded.version_sensitive``: set by
the serializer that wrote it, e.g. cloudpickle); a part without it is taken as sensitive
when its tag is one of :data:`LEGACY_VERSION_SENSITIVE_TAGS` (what writers before the flag
meant).

The signature is HMAC-SHA256 over ``body``. The receiving side checks magic, format
version and the signature before it reads the body, then the body's shape and its issue
time (``meta["issued"]``, inside the signed part: an envelope older than ``max_age`` or
issued more than :data:`CLOCK_SKEW` seconds in the future is refused), and refuses pickled
parts written by another Python major.minor before unpickling them. Nothing here unpickles:
parts stay bytes until a serializer decodes them.
The header costs ~40 bytes, so 1 MiB of ``bytes`` travels with well under 1% overhead.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import time
from collections.abc import Mapping
from typing import Any

import attrs
import msgpack

from lambdarun.errors import (
    EnvelopeError,
    EnvelopeExpiredError,
    EnvelopeSignatureError,
    EnvelopeVersionError,
    PythonVersionMismatchError,
)
from lambdarun.types import Encoded

__all__ = ["Envelope", "pack", "unpack", "check_age", "FORMAT_VERSION", "MAGIC", "PYTHON_VERSION", "CLOCK_SKEW"]

MAGIC = "LRUN"
FORMAT_VERSION = 1
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
_HEADER_MAX = 64
#: seconds an envelope's issue time may lie in the future (clocks of caller and Lambda differ)
CLOCK_SKEW = 300.0
#: the meta key holding the issue time (seconds since the epoch), set by :func:`pack`
ISSUED = "issued"
#: tags read as version-sensitive even without the part's flag (pickle-based, built in)
LEGACY_VERSION_SENSITIVE_TAGS = frozenset({"cloudpickle", "pickle"})


@attrs.frozen
class Envelope:
    """What travels: a kind (``"call"``, ``"outcome"``, ...), encoded parts and metadata.

    ``ref`` is set instead of ``parts`` when the payload itself lives in storage.
    """

    kind: str
    parts: tuple[Encoded, ...] = ()
    meta: Mapping[str, Any] = attrs.field(factory=dict)
    ref: str | None = None
    python: str = PYTHON_VERSION

    @property
    def issued(self) -> float | None:
        """When the sender packed it (seconds since the epoch; inside the signed part)."""
        value = self.meta.get(ISSUED)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def check_python(self, version_sensitive_tags: frozenset[str] = frozenset()) -> None:
        """Refuse version-sensitive parts (``Encoded.version_sensitive``, or a tag in
        ``version_sensitive_tags``) written by a different Python major.minor."""
        if self.python != PYTHON_VERSION and any(
            p.version_sensitive or p.tag in version_sensitive_tags for p in self.parts
        ):
            raise PythonVersionMismatchError(
                f"this envelope was pickled by Python {self.python} but is being decoded by "
                f"Python {PYTHON_VERSION}; pickled code only loads on the same major.minor. "
                f"Run the Lambda function on Python {self.python} (or the caller on "
                f"{PYTHON_VERSION})."
            )


def _sign(key: bytes, body: bytes | memoryview) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def pack(envelope: Envelope, key: bytes | None = None) -> bytes:
    """Frame ``envelope``, stamped with its issue time (now, unless its meta already has one),
    and sign it when ``key`` is given."""
    body = msgpack.packb(
        [
            envelope.python,
            envelope.kind,
            [[p.tag, p.data, True] if p.version_sensitive else [p.tag, p.data] for p in envelope.parts],
            {ISSUED: time.time(), **envelope.meta},  # a sender may fix it (a re-sent call)
            envelope.ref,
        ],
        use_bin_type=True,
    )
    header = msgpack.packb([MAGIC, FORMAT_VERSION, _sign(key, body) if key else None])
    return header + body


def unpack(
    data: bytes | bytearray | memoryview,
    key: bytes | None = None,
    *,
    max_age: float | None = None,
    now: float | None = None,
) -> Envelope:
    """Verify and read an envelope; nothing in it is unpickled.

    :param key: the signing key; with a key, an unsigned or wrongly signed envelope is
        refused (:class:`EnvelopeSignatureError`). Without one, signatures are not checked:
        callers decide whether that is allowed (``allow_unsigned``).
    :param max_age: refuse (:class:`EnvelopeExpiredError`) an envelope issued longer ago
        than this many seconds, or more than :data:`CLOCK_SKEW` seconds in the future, or
        carrying no issue time. None: no age check.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError(f"an envelope is bytes, not {type(data).__name__}")
    view = memoryview(data)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(view[:_HEADER_MAX])
    try:
        header = unpacker.unpack()
    except Exception as exc:
        raise EnvelopeError(
            "not a lambdarun envelope (unreadable header); both sides must run lambdarun"
        ) from exc
    if not (isinstance(header, list) and len(header) == 3 and header[0] == MAGIC):
        raise EnvelopeError("not a lambdarun envelope (bad magic); both sides must run lambdarun")
    magic, version, signature = header
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise EnvelopeVersionError(
            f"envelope format version {version!r} is not supported by this lambdarun (it reads "
            f"version {FORMAT_VERSION}); install the same lambdarun version on both sides"
        )
    if signature is not None and not isinstance(signature, bytes):
        raise EnvelopeSignatureError(
            f"refused an envelope whose signature field is a {type(signature).__name__}, not "
            "bytes: it was not written by lambdarun"
        )
    body = view[unpacker.tell() :]
    if key is not None:
        if signature is None:
            raise EnvelopeSignatureError(
                "refused an unsigned envelope: signing is on here but the sender signed "
                "nothing; give both sides the same key (signing_key / signing_key_secret, or "
                "the local stack's own key)"
            )
        if not hmac.compare_digest(signature, _sign(key, body)):
            raise EnvelopeSignatureError(
                "refused an envelope whose signature is wrong: it was tampered with or signed "
                "with another key; give both sides the same key (signing_key / "
                "signing_key_secret, or the local stack's own key)"
            )
    try:
        fields = msgpack.unpackb(body, raw=False)
    except Exception as exc:
        raise EnvelopeError(f"corrupt envelope body: {exc}") from exc
    envelope = _shaped(fields)
    if max_age is not None:
        check_age(envelope, max_age, now=now)
    return envelope


def _shaped(fields: Any) -> Envelope:
    """The body as an :class:`Envelope`, or :class:`EnvelopeError` when its shape is wrong."""
    if not (isinstance(fields, list) and len(fields) == 5):
        raise EnvelopeError("corrupt envelope body: expected [python, kind, parts, meta, ref]")
    python, kind, parts, meta, ref = fields
    if not isinstance(python, str) or not isinstance(kind, str):
        raise EnvelopeError("corrupt envelope body: python version and kind must be strings")
    if not isinstance(parts, list) or not all(
        isinstance(p, list) and len(p) in (2, 3) and isinstance(p[0], str) and isinstance(p[1], bytes)
        and (len(p) == 2 or p[2] is True)
        for p in parts
    ):
        raise EnvelopeError("corrupt envelope body: parts must be [tag, bytes] or [tag, bytes, true]")
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise EnvelopeError("corrupt envelope body: meta must be a map with string keys")
    if ref is not None and not isinstance(ref, str):
        raise EnvelopeError("corrupt envelope body: ref must be a string or nil")
    encoded = tuple(
        Encoded(p[0], p[1], version_sensitive=len(p) == 3 or p[0] in LEGACY_VERSION_SENSITIVE_TAGS)
        for p in parts
    )
    return Envelope(kind=kind, parts=encoded, meta=meta, ref=ref, python=python)


def check_age(envelope: Envelope, max_age: float, *, now: float | None = None) -> None:
    """Refuse (:class:`EnvelopeExpiredError`) an envelope issued more than ``max_age``
    seconds before ``now`` (default: the clock), more than :data:`CLOCK_SKEW` seconds after
    it, or without an issue time."""
    now = time.time() if now is None else now
    issued = envelope.issued
    if issued is None:
        raise EnvelopeExpiredError(
            "refused an envelope without an issue time; install the same lambdarun version on "
            "both sides"
        )
    age = now - issued
    if age > max_age:
        raise EnvelopeExpiredError(
            f"refused an envelope issued {age:.0f} s ago: envelopes are accepted for "
            f"envelope_max_age = {max_age:g} s. A replayed or long-queued message; if tasks "
            "legitimately wait longer, raise envelope_max_age on both sides"
        )
    if -age > CLOCK_SKEW:
        raise EnvelopeExpiredError(
            f"refused an envelope issued {-age:.0f} s in the future (more than the "
            f"{CLOCK_SKEW:g} s clock-skew allowance); synchronise the clocks of caller and "
            "function (NTP)"
        )
