"""SerDes with the AWS SDK's default extended-type JSON encoding.

Wire format (byte-identical to ``aws_durable_execution_sdk_python.serdes``):

- primitives and lists of primitives: plain compact JSON (``42``, ``"a"``, ``[1,2]``);
- everything else: an envelope ``{"t": <tag>, "v": <value>}`` applied recursively, with
  tags ``n s i f b`` (primitives), ``B`` (bytes, base64), ``u`` (UUID), ``d`` (Decimal),
  ``dt``/``D`` (datetime/date, ISO 8601), ``t`` (tuple), ``l`` (list), ``m`` (dict) and
  ``br`` (BatchResult).
"""

from __future__ import annotations

import base64
import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, TypeVar

from lambdarun_durable.concurrency.models import BatchResult
from lambdarun_durable.exceptions import RetryableSerDesError, SerDesError

T = TypeVar("T")

TYPE_TOKEN = "t"
VALUE_TOKEN = "v"


class TypeTag(StrEnum):
    NONE = "n"
    STR = "s"
    INT = "i"
    FLOAT = "f"
    BOOL = "b"
    BYTES = "B"
    UUID = "u"
    DECIMAL = "d"
    DATETIME = "dt"
    DATE = "D"
    TUPLE = "t"
    LIST = "l"
    DICT = "m"
    BATCH_RESULT = "br"


def _encode(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {"t": "n", "v": None}
    if isinstance(obj, str):
        return {"t": "s", "v": obj}
    if isinstance(obj, bool):
        return {"t": "b", "v": obj}
    if isinstance(obj, int):
        return {"t": "i", "v": obj}
    if isinstance(obj, float):
        return {"t": "f", "v": obj}
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"t": "B", "v": base64.b64encode(bytes(obj)).decode("utf-8")}
    if isinstance(obj, uuid.UUID):
        return {"t": "u", "v": str(obj)}
    if isinstance(obj, Decimal):
        return {"t": "d", "v": str(obj)}
    if isinstance(obj, datetime):
        return {"t": "dt", "v": obj.isoformat()}
    if isinstance(obj, date):
        return {"t": "D", "v": obj.isoformat()}
    if isinstance(obj, BatchResult):
        return {"t": "br", "v": _encode(obj.to_dict())["v"]}
    if isinstance(obj, list):
        return {"t": "l", "v": [_encode(v) for v in obj]}
    if isinstance(obj, tuple):
        return {"t": "t", "v": [_encode(v) for v in obj]}
    if isinstance(obj, dict):
        for k in obj:
            if isinstance(k, tuple):
                raise SerDesError("Tuple keys not supported")
        return {"t": "m", "v": {k: _encode(v) for k, v in obj.items()}}
    raise SerDesError(f"Unsupported type: {type(obj)}")


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, dict) and TYPE_TOKEN in obj and VALUE_TOKEN in obj:
        try:
            tag = TypeTag(obj[TYPE_TOKEN])
        except ValueError:
            raise SerDesError(f'Unknown type tag: "{obj[TYPE_TOKEN]}"') from None
        return _decode(tag, obj[VALUE_TOKEN])
    return obj


def _decode(tag: TypeTag, value: Any) -> Any:
    match tag:
        case TypeTag.NONE:
            return None
        case TypeTag.STR:
            return str(value)
        case TypeTag.BOOL:
            return bool(value)
        case TypeTag.INT:
            return int(value)
        case TypeTag.FLOAT:
            return float(value)
        case TypeTag.BYTES:
            return base64.b64decode(value.encode("utf-8"))
        case TypeTag.UUID:
            return uuid.UUID(value)
        case TypeTag.DECIMAL:
            return Decimal(value)
        case TypeTag.DATETIME:
            s = value[:-1] + "+00:00" if isinstance(value, str) and value.endswith("Z") else value
            return datetime.fromisoformat(s)
        case TypeTag.DATE:
            return date.fromisoformat(value)
        case TypeTag.LIST:
            if not isinstance(value, list):
                raise SerDesError(f"Expected list, got {type(value)}")
            return [_unwrap(v) for v in value]
        case TypeTag.TUPLE:
            if not isinstance(value, list):
                raise SerDesError(f"Expected list, got {type(value)}")
            return tuple(_unwrap(v) for v in value)
        case TypeTag.DICT:
            if not isinstance(value, dict):
                raise SerDesError(f"Expected dict, got {type(value)}")
            return {k: _unwrap(v) for k, v in value.items()}
        case TypeTag.BATCH_RESULT:
            return BatchResult.from_dict(_decode(TypeTag.DICT, value))
    raise SerDesError(f"Unknown type tag: {tag}")


@dataclass(frozen=True)
class SerDesContext:
    operation_id: str = ""
    durable_execution_arn: str = ""


class SerDes(ABC, Generic[T]):
    @abstractmethod
    def serialize(self, value: T, serdes_context: SerDesContext) -> str: ...

    @abstractmethod
    def deserialize(self, data: str, serdes_context: SerDesContext) -> T: ...

    @staticmethod
    def is_primitive(obj: Any) -> bool:
        if obj is None or isinstance(obj, str | int | float | bool):
            return True
        if isinstance(obj, list):
            return all(SerDes.is_primitive(item) for item in obj)
        return False


class PassThroughSerDes(SerDes[T]):
    def serialize(self, value: T, _: SerDesContext) -> str:  # type: ignore[override]
        return value  # type: ignore[return-value]

    def deserialize(self, data: str, _: SerDesContext) -> T:  # type: ignore[override]
        return data  # type: ignore[return-value]


class JsonSerDes(SerDes[T]):
    def serialize(self, value: T, _: SerDesContext) -> str:  # type: ignore[override]
        return json.dumps(value)

    def deserialize(self, data: str, _: SerDesContext) -> T:  # type: ignore[override]
        return json.loads(data)


class ExtendedTypeSerDes(SerDes[T]):
    """The SDK's default: plain JSON for primitives, tagged envelopes for the rest."""

    def serialize(self, value: Any, context: SerDesContext | None = None) -> str:  # noqa: ARG002
        if SerDes.is_primitive(value):
            return json.dumps(value, separators=(",", ":"))
        return json.dumps(_encode(value), separators=(",", ":"))

    def deserialize(self, data: str, context: SerDesContext | None = None) -> Any:  # noqa: ARG002
        obj = json.loads(data)
        if SerDes.is_primitive(obj):
            return obj
        if not (isinstance(obj, dict) and TYPE_TOKEN in obj and VALUE_TOKEN in obj):
            raise SerDesError('Malformed envelope: missing "t" or "v" at root.')
        return _unwrap(obj)


DEFAULT_JSON_SERDES: SerDes[Any] = JsonSerDes()
EXTENDED_TYPES_SERDES: SerDes[Any] = ExtendedTypeSerDes()


def serialize(serdes: SerDes[T] | None, value: T, operation_id: str, durable_execution_arn: str) -> str:
    """Serialize with ``serdes`` (default: extended-type JSON); wrap failures in SerDesError."""
    active = serdes or EXTENDED_TYPES_SERDES
    try:
        return active.serialize(value, SerDesContext(operation_id, durable_execution_arn))
    except (RetryableSerDesError, SerDesError):
        raise
    except Exception as e:
        raise SerDesError(f"Serialization failed for id: {operation_id}, error: {e}.") from e


def deserialize(serdes: SerDes[T] | None, data: str, operation_id: str, durable_execution_arn: str) -> T:
    active = serdes or EXTENDED_TYPES_SERDES
    try:
        return active.deserialize(data, SerDesContext(operation_id, durable_execution_arn))
    except (RetryableSerDesError, SerDesError):
        raise
    except Exception as e:
        raise SerDesError(f"Deserialization failed for id: {operation_id}, error: {e}.") from e
