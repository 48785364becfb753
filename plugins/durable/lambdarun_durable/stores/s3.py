"""``s3://bucket/prefix``: one object per append, ``<prefix>/<id>/v<version>.json``.

Written with ``IfNoneMatch="*"`` so exactly one writer can create each version; the lease
is ``<id>/lease.json``, written with ``IfNoneMatch``/``IfMatch``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from lambdarun.errors import CheckpointConflictError, CheckpointError, ExecutionNotFoundError
from lambdarun.types import Checkpoint, Lease

from lambdarun_durable.stores.base import (
    check_lease_args,
    conflict_error,
    dumps,
    lease_held_error,
    lease_lost_error,
    loads,
    malformed_lease_error,
    not_found_error,
)


class S3CheckpointStore:
    """One JSON object per version under ``s3://bucket/prefix/<execution id>/``."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, execution_id: str, version: int | None = None) -> str:
        safe = execution_id.replace("/", "%2F").replace(":", "%3A").replace("$", "%24")
        base = f"{self.prefix}/{safe}/" if self.prefix else f"{safe}/"
        return base if version is None else f"{base}v{version:012d}.json"

    def _put_new(self, execution_id: str, version: int, body: dict[str, Any], expected: int) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(execution_id, version), Body=dumps(body).encode(), IfNoneMatch="*"
            )
        except self.client.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                if version == 1:
                    raise CheckpointConflictError(f"Execution {execution_id!r} already exists in {self.url}") from None
                raise conflict_error(execution_id, expected, None) from None
            raise

    def _versions(self, execution_id: str) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(execution_id)
        ):
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if name.startswith("v") and name.endswith(".json"):
                    out.append((int(name[1:-5]), obj["Key"]))
        out.sort()
        return out

    def create(self, execution_id: str, state: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = ()) -> Checkpoint:
        self._put_new(execution_id, 1, {"state": dict(state), "records": list(records), "replace": True}, 0)
        return Checkpoint(execution_id, 1, dict(state), tuple(records))

    def load(self, execution_id: str) -> Checkpoint:
        versions = self._versions(execution_id)
        if not versions:
            raise not_found_error(execution_id, self.url)
        bodies = [loads(self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read()) for _, k in versions]
        start = max(i for i, b in enumerate(bodies) if b.get("replace"))
        records: list[Any] = []
        state: dict[str, Any] = {}
        for b in bodies[start:]:
            records.extend(b.get("records") or [])
        for b in bodies:
            if b.get("state") is not None:
                state = b["state"]
        return Checkpoint(execution_id, versions[-1][0], state, tuple(records))

    def append(
        self,
        execution_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        expected_version: int,
        state: Mapping[str, Any] | None = None,
    ) -> int:
        self._check_version(execution_id, expected_version)
        body = {"state": dict(state) if state is not None else None, "records": list(records)}
        self._put_new(execution_id, expected_version + 1, body, expected_version)
        return expected_version + 1

    def replace(
        self,
        execution_id: str,
        state: Mapping[str, Any],
        *,
        expected_version: int,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        self._check_version(execution_id, expected_version)
        body = {"state": dict(state), "records": list(records or []), "replace": records is not None}
        self._put_new(execution_id, expected_version + 1, body, expected_version)
        return expected_version + 1

    def _check_version(self, execution_id: str, expected: int) -> None:
        versions = self._versions(execution_id)
        if not versions:
            raise not_found_error(execution_id, self.url)
        if versions[-1][0] != expected:
            raise conflict_error(execution_id, expected, versions[-1][0])

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Checkpoint]:
        out: list[Checkpoint] = []
        prefix = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            for cp in page.get("CommonPrefixes", []):
                eid = cp["Prefix"][len(prefix):].rstrip("/")
                eid = eid.replace("%2F", "/").replace("%3A", ":").replace("%24", "$")
                try:
                    c = self.load(eid)
                except ExecutionNotFoundError:  # a lease without its execution
                    continue
                if status is None or c.state.get("status") == status:
                    out.append(Checkpoint(eid, c.version, c.state, ()))
        out.sort(key=lambda c: c.state.get("StartTimestamp") or 0, reverse=True)
        return out[:limit]

    def delete(self, execution_id: str) -> None:
        keys = [{"Key": k} for _, k in self._versions(execution_id)]
        keys.append({"Key": self._key(execution_id) + "lease.json"})
        self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    # -- lease: the object <id>/lease.json, written with IfNoneMatch="*" / IfMatch=<etag>
    def _read_lease(self, execution_id: str) -> tuple[Lease | None, str | None]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(execution_id) + "lease.json")
        except self.client.exceptions.NoSuchKey:
            return None, None
        try:
            body = loads(obj["Body"].read())
            lease = Lease(
                execution_id, str(body["holder"]), float(body["acquired"]), float(body["expires"]),
                float(body["heartbeat"]),
            )
        except (KeyError, TypeError, ValueError):
            raise malformed_lease_error(execution_id, f"s3://{self.bucket}/{self._key(execution_id)}lease.json") from None
        return lease, obj["ETag"]

    def _write_lease(self, lease: Lease, etag: str | None) -> bool:
        """Compare-and-set: create (no etag) or replace the object read with ``etag``."""
        body = {
            "holder": lease.holder,
            "acquired": lease.acquired_at,
            "expires": lease.expires_at,
            "heartbeat": lease.heartbeat_at,
            "nonce": secrets.token_hex(8),  # every write gets a new ETag
        }
        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(lease.execution_id) + "lease.json", Body=dumps(body).encode(), **cond
            )
        except self.client.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey", "404"):
                return False
            raise
        return True

    def get_lease(self, execution_id: str) -> Lease | None:
        return self._read_lease(execution_id)[0]

    def acquire_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        check_lease_args(holder, ttl)
        for _ in range(3):
            cur, etag = self._read_lease(execution_id)
            now = time.time()
            if cur is not None and cur.holder != holder and not cur.expired(now):
                raise lease_held_error(cur)
            acquired = cur.acquired_at if cur is not None and cur.holder == holder else now
            lease = Lease(execution_id, holder, acquired, now + ttl, now)
            if self._write_lease(lease, etag):
                return lease
        cur = self.get_lease(execution_id)
        if cur is None:
            raise CheckpointError(f"Could not take the lease on {execution_id!r}: too much contention; retry")
        raise lease_held_error(cur)

    def renew_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        check_lease_args(holder, ttl)
        cur, etag = self._read_lease(execution_id)
        if cur is None or cur.holder != holder:
            raise lease_lost_error(execution_id, holder, cur)
        now = time.time()
        lease = attrs.evolve(cur, expires_at=now + ttl, heartbeat_at=now)
        if not self._write_lease(lease, etag):
            raise lease_lost_error(execution_id, holder, self.get_lease(execution_id))
        return lease

    def release_lease(self, execution_id: str, holder: str) -> None:
        check_lease_args(holder)
        cur, etag = self._read_lease(execution_id)
        if cur is None or cur.holder != holder:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(execution_id) + "lease.json", IfMatch=etag)
        except self.client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise

    def close(self) -> None:
        pass
