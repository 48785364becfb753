"""Built-in serializers (a default plugin): msgpack for plain data, cloudpickle for the rest.

Tags: ``"msgpack"`` and ``"cloudpickle"``. Both implementations are ``trylast`` so a plugin
can take over any value (for example a zero-copy encoding of numpy arrays).
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

import cloudpickle
import msgpack

from lambdarun.envelope import LEGACY_VERSION_SENSITIVE_TAGS
from lambdarun.errors import MissingModuleError, SerializationError
from lambdarun.hookspecs import hookimpl
from lambdarun.types import Decoded, Encoded

if TYPE_CHECKING:
    from lambdarun.session import Session

MSGPACK = "msgpack"
CLOUDPICKLE = "cloudpickle"

#: kept for compatibility: sensitivity now travels on each part (``Encoded.version_sensitive``);
#: these tags are only what an unflagged part read from the wire is taken to be
VERSION_SENSITIVE_TAGS = LEGACY_VERSION_SENSITIVE_TAGS

_SCALARS = (str, bytes, float, bool, type(None))
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def is_plain(value: Any, _depth: int = 0) -> bool:
    """True when msgpack round-trips ``value`` to an equal object of the same types."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX
    if _depth > 32:
        return False
    if kind is list:
        return all(is_plain(item, _depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and is_plain(v, _depth + 1) for k, v in value.items())
    return False


@hookimpl(trylast=True)
def lambdarun_encode(value: Any, session: Session) -> Encoded:
    if is_plain(value):
        return Encoded(MSGPACK, msgpack.packb(value, use_bin_type=True))
    try:
        return Encoded(CLOUDPICKLE, cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), version_sensitive=True)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {_describe(value)}: {type(exc).__name__}: {exc}. Pass a "
            "picklable value, or register a serializer plugin for this type."
        ) from exc


@hookimpl(trylast=True)
def lambdarun_decode(encoded: Encoded, session: Session) -> Decoded | None:
    if encoded.tag == MSGPACK:
        try:
            return Decoded(msgpack.unpackb(encoded.data, raw=False, strict_map_key=True))
        except Exception as exc:
            raise SerializationError(f"corrupt msgpack value: {exc}") from exc
    if encoded.tag == CLOUDPICKLE:
        try:
            return Decoded(pickle.loads(encoded.data))
        except ModuleNotFoundError as exc:
            raise MissingModuleError(
                f"cannot load a pickled value: module {exc.name!r} is not installed here. "
                f"Install it where the value is decoded (for Lambda: add it to the deployed "
                f"requirements), or pass the object by value.",
                name=exc.name,
            ) from exc
        except Exception as exc:
            raise SerializationError(
                f"cannot unpickle a value: {type(exc).__name__}: {exc}"
            ) from exc
    return None


def _describe(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__module__}.{type(value).__qualname__} {text}"
