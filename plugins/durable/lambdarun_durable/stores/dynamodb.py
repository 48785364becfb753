"""``dynamodb://table``: executions in one DynamoDB table.

One item per execution (``sk="#META"``, holds version and state) and one item per append
holding that batch's records (split at ~350 KB); every append is one ``TransactWriteItems``
whose first action is conditional on the loaded version. The lease is a ``sk="#LEASE"``
item written with a condition.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from lambdarun.errors import CheckpointConflictError, CheckpointError
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


_ITEM_BUDGET = 350_000  # bytes of JSON per record item (DynamoDB items are <= 400 KB)


def _chunks(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The batch as one JSON array, cut into <= 350 KB pieces (rejoined by ``load``)."""
    text = dumps([dict(r) for r in records])
    return [text[i : i + _ITEM_BUDGET] for i in range(0, len(text), _ITEM_BUDGET)] if records else []


class DynamoDBCheckpointStore:
    """Executions in one DynamoDB table (``pk`` string hash key, ``sk`` string range key)."""

    def __init__(self, table: str, client: Any, *, create_table: bool = True) -> None:
        self.table = table
        self.client = client
        self.url = f"dynamodb://{table}"
        if create_table:
            self.ensure_table()

    def ensure_table(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
            return
        except self.client.exceptions.ResourceNotFoundException:
            pass
        try:
            self.client.create_table(
                TableName=self.table,
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except self.client.exceptions.ResourceInUseException:
            pass
        self.client.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    def _record_puts(self, execution_id: str, version: int, records: Sequence[Mapping[str, Any]]) -> list[dict]:
        return [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": execution_id},
                        "sk": {"S": f"R#{version:012d}#{i:04d}"},
                        "records": {"S": chunk},
                    },
                }
            }
            for i, chunk in enumerate(_chunks(records))
        ]

    def create(self, execution_id: str, state: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = ()) -> Checkpoint:
        meta = {
            "Put": {
                "TableName": self.table,
                "Item": {
                    "pk": {"S": execution_id},
                    "sk": {"S": "#META"},
                    "version": {"N": "1"},
                    "base": {"N": "0"},
                    "state": {"S": dumps(dict(state))},
                    "status": {"S": str(state.get("status") or "")},
                    "created": {"N": repr(time.time())},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        self._transact([meta, *self._record_puts(execution_id, 1, records)], execution_id, 0, create=True)
        return Checkpoint(execution_id, 1, dict(state), tuple(records))

    def _transact(self, items: list[dict], execution_id: str, expected: int, create: bool = False) -> None:
        if len(items) > 100:
            raise CheckpointError(
                f"One checkpoint batch for {execution_id!r} needs {len(items)} DynamoDB items (max 100); "
                "lower the durable batch size."
            )
        try:
            self.client.transact_write_items(TransactItems=items)
        except self.client.exceptions.TransactionCanceledException as e:
            reasons = e.response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                if create:
                    raise CheckpointConflictError(f"Execution {execution_id!r} already exists in {self.url}") from None
                actual = self._version_or_none(execution_id)
                if actual is None:
                    raise not_found_error(execution_id, self.url) from None
                raise conflict_error(execution_id, expected, actual) from None
            raise

    def _version_or_none(self, execution_id: str) -> int | None:
        item = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": execution_id}, "sk": {"S": "#META"}}, ConsistentRead=True
        ).get("Item")
        return int(item["version"]["N"]) if item else None

    def load(self, execution_id: str) -> Checkpoint:
        items: list[dict] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": execution_id}},
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        meta = next((i for i in items if i["sk"]["S"] == "#META"), None)
        if meta is None:
            raise not_found_error(execution_id, self.url)
        version = int(meta["version"]["N"])
        base = int(meta.get("base", {"N": "0"})["N"])
        pieces: dict[int, list[str]] = {}
        for item in items:  # sorted by sk: version, then piece
            sk = item["sk"]["S"]
            if not sk.startswith("R#"):
                continue
            v = int(sk[2:14])
            if v <= version and (base == 0 or v >= base):
                pieces.setdefault(v, []).append(item["records"]["S"])
        records: list[Any] = []
        for v in sorted(pieces):
            records.extend(loads("".join(pieces[v])))
        return Checkpoint(execution_id, version, loads(meta["state"]["S"]), tuple(records))

    def _update_meta(self, execution_id: str, expected: int, state: Mapping[str, Any] | None, base: int | None) -> dict:
        sets = ["version = :nv"]
        values: dict[str, Any] = {":nv": {"N": str(expected + 1)}, ":ev": {"N": str(expected)}}
        names: dict[str, str] = {}
        if state is not None:
            sets += ["#st = :st", "#status = :status"]
            values[":st"] = {"S": dumps(dict(state))}
            values[":status"] = {"S": str(state.get("status") or "")}
            names["#st"] = "state"
            names["#status"] = "status"
        if base is not None:
            sets.append("#base = :base")
            values[":base"] = {"N": str(base)}
            names["#base"] = "base"
        upd: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": execution_id}, "sk": {"S": "#META"}},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "version = :ev",
            "ExpressionAttributeValues": values,
        }
        if names:
            upd["ExpressionAttributeNames"] = names
        return {"Update": upd}

    def append(
        self,
        execution_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        expected_version: int,
        state: Mapping[str, Any] | None = None,
    ) -> int:
        items = [self._update_meta(execution_id, expected_version, state, None)]
        items += self._record_puts(execution_id, expected_version + 1, records)
        self._transact(items, execution_id, expected_version)
        return expected_version + 1

    def replace(
        self,
        execution_id: str,
        state: Mapping[str, Any],
        *,
        expected_version: int,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        new = expected_version + 1
        items = [self._update_meta(execution_id, expected_version, state, new if records is not None else None)]
        if records is not None:
            items += self._record_puts(execution_id, new, records)
        self._transact(items, execution_id, expected_version)
        return new

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Checkpoint]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "sk = :m",
            "ExpressionAttributeValues": {":m": {"S": "#META"}},
        }
        metas: list[dict] = []
        while True:
            page = self.client.scan(**kwargs)
            metas.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if status is not None:
            metas = [m for m in metas if m.get("status", {}).get("S") == status]
        metas.sort(key=lambda m: float(m["created"]["N"]), reverse=True)
        return [
            Checkpoint(m["pk"]["S"], int(m["version"]["N"]), loads(m["state"]["S"]), ()) for m in metas[:limit]
        ]

    # -- lease: the item sk="#LEASE", written with conditions
    def _lease_key(self, execution_id: str) -> dict[str, Any]:
        return {"pk": {"S": execution_id}, "sk": {"S": "#LEASE"}}

    def _lease_of(self, execution_id: str, item: Mapping[str, Any]) -> Lease:
        try:
            return Lease(
                execution_id,
                item["holder"]["S"],
                float(item["acquired"]["N"]),
                float(item["expires"]["N"]),
                float(item["heartbeat"]["N"]),
            )
        except (KeyError, TypeError, ValueError):
            raise malformed_lease_error(execution_id, f"item pk={execution_id!r} sk='#LEASE' in {self.url}") from None

    def get_lease(self, execution_id: str) -> Lease | None:
        item = self.client.get_item(
            TableName=self.table, Key=self._lease_key(execution_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else self._lease_of(execution_id, item)

    def acquire_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        check_lease_args(holder, ttl)
        for _ in range(3):
            cur = self.get_lease(execution_id)
            now = time.time()
            if cur is not None and cur.holder != holder and not cur.expired(now):
                raise lease_held_error(cur)
            lease = self._put_lease_if_free(execution_id, holder, ttl, cur, now)
            if lease is not None:
                return lease
        raise CheckpointError(f"Could not take the lease on {execution_id!r}: too much contention; retry")

    def _put_lease_if_free(self, execution_id: str, holder: str, ttl: float, cur: Lease | None, now: float) -> Lease | None:
        acquired = cur.acquired_at if cur is not None and cur.holder == holder else now
        lease = Lease(execution_id, holder, acquired, now + ttl, now)
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    **self._lease_key(execution_id),
                    "holder": {"S": holder},
                    "acquired": {"N": repr(lease.acquired_at)},
                    "expires": {"N": repr(lease.expires_at)},
                    "heartbeat": {"N": repr(lease.heartbeat_at)},
                },
                # free, ours, or expired at the time of this write: the store decides, atomically
                ConditionExpression="attribute_not_exists(pk) OR holder = :h OR expires <= :now",
                ExpressionAttributeValues={":h": {"S": holder}, ":now": {"N": repr(now)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            cur = self.get_lease(execution_id)
            if cur is None:  # released in between: try again
                return None
            raise lease_held_error(cur) from None
        return lease

    def renew_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        check_lease_args(holder, ttl)
        now = time.time()
        try:
            item = self.client.update_item(
                TableName=self.table,
                Key=self._lease_key(execution_id),
                UpdateExpression="SET expires = :e, heartbeat = :now",
                ConditionExpression="holder = :h",
                ExpressionAttributeValues={":h": {"S": holder}, ":e": {"N": repr(now + ttl)}, ":now": {"N": repr(now)}},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except self.client.exceptions.ConditionalCheckFailedException:
            raise lease_lost_error(execution_id, holder, self.get_lease(execution_id)) from None
        return self._lease_of(execution_id, item)

    def release_lease(self, execution_id: str, holder: str) -> None:
        check_lease_args(holder)
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=self._lease_key(execution_id),
                ConditionExpression="holder = :h",
                ExpressionAttributeValues={":h": {"S": holder}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # not ours (any more): nothing to give up

    def delete(self, execution_id: str) -> None:
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": execution_id}},
            ProjectionExpression="pk, sk",
        ):
            for item in page.get("Items", []):
                self.client.delete_item(TableName=self.table, Key={"pk": item["pk"], "sk": item["sk"]})

    def close(self) -> None:
        pass
