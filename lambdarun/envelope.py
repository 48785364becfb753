"""The wire envelope: versioned, msgpack-framed, optionally HMAC-signed.

Layout (bytes)::

    msgpack([MAGIC, FORMAT_VERSION, signature | None])  +  body
    body = msgpack([python "3.11", kind, [[tag, data], ...], meta, ref])

The signature is HMAC-SHA256 over ``body``. The receiving side checks magic, format
version and (when a signing key is configured) the signature before it decodes the body,
and refuses pickled parts written by another Python major.minor before unpickling them.
The header costs ~40 bytes, so 1 MiB of ``bytes`` travels with well under 1% overhead.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Mapping
from typing import Any

import attrs
import msgpack

from lambdarun.errors import (
    EnvelopeError,
    EnvelopeSignatureError,
    EnvelopeVersionError,
    PythonVersionMismatchError,
)
from lambdarun.types import Encoded

__all__ = ["Envelope", "pack", "unpack", "FORMAT_VERSION", "MAGIC", "PYTHON_VERSION"]

MAGIC = "LRUN"
FORMAT_VERSION = 1
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
_HEADER_MAX = 64


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

    def check_python(self, version_sensitive_tags: frozenset[str]) -> None:
        """Refuse pickled parts written by a different Python major.minor."""
        if self.python != PYTHON_VERSION and any(
            p.tag in version_sensitive_tags for p in self.parts
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
    body = msgpack.packb(
        [
            envelope.python,
            envelope.kind,
            [[p.tag, p.data] for p in envelope.parts],
            dict(envelope.meta),
            envelope.ref,
        ],
        use_bin_type=True,
    )
    header = msgpack.packb([MAGIC, FORMAT_VERSION, _sign(key, body) if key else None])
    return header + body


def unpack(data: bytes | bytearray | memoryview, key: bytes | None = None) -> Envelope:
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
    if version != FORMAT_VERSION:
        raise EnvelopeVersionError(
            f"envelope format version {version!r} is not supported by this lambdarun (it reads "
            f"version {FORMAT_VERSION}); install the same lambdarun version on both sides"
        )
    body = view[unpacker.tell() :]
    if key is not None:
        if signature is None:
            raise EnvelopeSignatureError(
                "refused an unsigned envelope: signing is on here (signing_key is set) but the "
                "sender signed nothing; configure the same LAMBDARUN_SIGNING_KEY on both sides"
            )
        if not hmac.compare_digest(signature, _sign(key, body)):
            raise EnvelopeSignatureError(
                "refused an envelope whose signature is wrong: it was tampered with or signed "
                "with another key; configure the same LAMBDARUN_SIGNING_KEY on both sides"
            )
    try:
        python, kind, parts, meta, ref = msgpack.unpackb(body, raw=False)
        encoded = tuple(Encoded(tag, bytes(blob)) for tag, blob in parts)
    except Exception as exc:
        raise EnvelopeError(f"corrupt envelope body: {exc}") from exc
    return Envelope(kind=kind, parts=encoded, meta=meta, ref=ref, python=python)


