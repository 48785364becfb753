"""The durable plugin declares its checkpoint table to ``lambdarun deploy`` (hook
``lambdarun_deploy_resources``), with the key its DynamoDB store really uses."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import lambdarun_durable.plugin
from lambdarun.deploy import DeployResources
from lambdarun_durable.deploy import TABLE_SID
from lambdarun_durable.stores import DynamoDBCheckpointStore


def _declared(session: Any) -> DeployResources:
    register = DeployResources()
    session.pm.hook.lambdarun_deploy_resources(settings=session.settings, register=register)
    return register


def test_a_dynamodb_store_declares_its_table(lambdarun_session: Callable[..., Any]) -> None:
    session = lambdarun_session(lambdarun_durable.plugin, overrides={"durable": {"store_url": "dynamodb://checkpoints"}})
    (table,) = _declared(session).tables
    assert table.name == "checkpoints"
    assert [(k.name, k.type, k.key_type) for k in table.keys] == [("pk", "S", "HASH"), ("sk", "S", "RANGE")]
    assert table.sid == TABLE_SID and "dynamodb:TransactWriteItems" in table.actions


def test_other_stores_declare_nothing_and_deploy_table_names_it(lambdarun_session: Callable[..., Any], tmp_path: Any) -> None:
    sqlite = lambdarun_session(lambdarun_durable.plugin, overrides={"durable": {"store_url": f"sqlite:///{tmp_path}/d.db"}})
    assert _declared(sqlite).tables == []
    s3 = lambdarun_session(lambdarun_durable.plugin, overrides={"durable": {"store_url": "s3://b/durable"}})
    assert _declared(s3).tables == []
    named = lambdarun_session(lambdarun_durable.plugin, overrides={"deploy": {"table": "named-checkpoints"}})
    assert [t.name for t in _declared(named).tables] == ["named-checkpoints"]


def test_the_declared_table_is_the_one_the_store_uses(dynamodb_client: Any) -> None:
    """Create the table exactly as deploy would (from the declaration), then run the store on
    it without letting the store create anything: a schema drift between the two fails here."""
    from lambdarun_durable.deploy import checkpoint_table

    name = f"deployed-{uuid.uuid4().hex[:8]}"
    dynamodb_client.create_table(**checkpoint_table(name).create_request())
    dynamodb_client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    store = DynamoDBCheckpointStore(name, dynamodb_client, create_table=False)
    try:
        created = store.create("exec-1", {"status": "RUNNING"}, [{"op": "start"}])
        store.append("exec-1", [{"op": "step"}], expected_version=created.version, state={"status": "SUCCEEDED"})
        loaded = store.load("exec-1")
        assert [r["op"] for r in loaded.records] == ["start", "step"]
        assert loaded.state["status"] == "SUCCEEDED"
        assert [c.execution_id for c in store.list()] == ["exec-1"]
    finally:
        store.close()
        dynamodb_client.delete_table(TableName=name)
