"""Checkpoint stores implementing :class:`lambdarun.types.CheckpointStore`, one module each.

* ``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` (SQLAlchemy convention): one file, WAL,
  one transaction and one row (a JSON array) per ``append``, so a batch of 1000 records is
  one fsync.
* ``dynamodb://table``: one item per execution (``sk="#META"``, holds version and state) and
  one item per append holding that batch's records (split at ~350 KB); every append is one
  ``TransactWriteItems`` whose first action is conditional on the loaded version.
* ``s3://bucket/prefix``: one object per append, ``<prefix>/<id>/v<version>.json``, written
  with ``IfNoneMatch="*"`` so exactly one writer can create each version.

All raise :class:`~lambdarun.errors.CheckpointConflictError` on a version mismatch and
:class:`~lambdarun.errors.ExecutionNotFoundError` for an unknown execution.

Each store also keeps one driver lease per execution, apart from its versioned data
(a ``leases`` row, a ``sk="#LEASE"`` item, a ``<id>/lease.json`` object), written with the
store's compare-and-set (a SQLite write transaction, a DynamoDB condition, S3
``IfNoneMatch``/``IfMatch``), so of two drivers racing for a lease exactly one wins.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from lambdarun.errors import CheckpointError

from lambdarun_durable.stores.base import lease_held_error, lease_lost_error
from lambdarun_durable.stores.dynamodb import DynamoDBCheckpointStore
from lambdarun_durable.stores.s3 import S3CheckpointStore
from lambdarun_durable.stores.sqlite import SQLiteCheckpointStore

__all__ = [
    "DynamoDBCheckpointStore",
    "S3CheckpointStore",
    "SQLiteCheckpointStore",
    "lease_held_error",
    "lease_lost_error",
    "open_store",
    "sqlite_path",
]


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///`` store URL."""
    if not url.startswith("sqlite:///"):
        raise CheckpointError(f"Not a SQLite store URL: {url!r}; use sqlite:///relative.db or sqlite:////abs.db")
    return url[len("sqlite:///"):]


def open_store(url: str, session: Any = None, *, client: Any = None) -> Any:
    """Open the store for ``url``; boto3 clients come from ``client`` or the session's target."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        return SQLiteCheckpointStore(sqlite_path(url), url=url)
    if scheme in ("dynamodb", "s3"):
        service = "dynamodb" if scheme == "dynamodb" else "s3"
        if client is None:
            if session is not None:
                client = session.target.client(service)
            else:
                import boto3

                client = boto3.client(service)
        parsed = urlparse(url)
        if scheme == "dynamodb":
            return DynamoDBCheckpointStore(parsed.netloc, client)
        return S3CheckpointStore(parsed.netloc, parsed.path.lstrip("/"), client)
    raise CheckpointError(
        f"Unsupported durable store URL {url!r}: use sqlite:///path.db, dynamodb://table or s3://bucket/prefix"
    )
