"""What a shared stack keeps in its state directory, and what it refuses to load from there.

The kill-and-restart scenarios (SIGKILL of `lambdarun local up`) are in
``tests/chaos/test_local_restart.py``; here the stacks run in this process and stop cleanly,
and the state files are attacked directly (forged, malformed, oversized, linked, writable by
others): whatever is refused is moved aside, never loaded, and nothing it names runs.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from lambdarun.local import LocalStack
from lambdarun.local.persist import (
    EVENT_FILE_LIMIT,
    EventStore,
    MotoJournal,
    StoredEvent,
    compact_entries,
    is_write,
)
from lambdarun.local.testing import create_function
from lambdarun.testing import wait_for

pytestmark = pytest.mark.timeout(120)

COUNTING_APP = """
import json, os

def handler(event, context):
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write(json.dumps({"id": event.get("id"), "request": context.aws_request_id}) + "\\n")
    return event.get("id")
"""


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Callable[[], LocalStack]]:
    """``shared()`` starts a shared (persisting) stack on one state directory, in this
    process; each is stopped at the end."""
    stacks: list[LocalStack] = []

    def start(**options: Any) -> LocalStack:
        stack = LocalStack(tmp_path / "state", reuse=False, shared=True, stop_at_exit=False,
                           async_retry_delay=0.1, **options)
        stacks.append(stack.start())
        return stack

    yield start
    for stack in stacks:
        stack.stop()


HOLDER_APP = """
import os, time
def handler(event, context):
    open(event["running"], "w").close()
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.05)
"""


def hold_the_account(stack: LocalStack, tmp_path: Path) -> None:
    """On a stack whose account concurrency is 1: a synchronous call that holds the one slot
    until the stack stops, so that Event invocations stay queued (they wait for a slot)."""
    import threading

    lam = stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=120)
    create_function(lam, "holder", HOLDER_APP, timeout=120)
    running = tmp_path / f"holder-running-{uuid.uuid4().hex[:6]}"

    def hold() -> None:
        try:
            lam.invoke(FunctionName="holder", Payload=json.dumps({"running": str(running)}))
        except Exception:  # the stack stopped under it
            pass

    threading.Thread(target=hold, daemon=True).start()
    wait_for(running.exists, "the holder to run")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def state_of(stack: LocalStack) -> Path:
    assert stack.run_dir is not None
    return stack.run_dir / "state"


def test_state_files_are_private_and_written_atomically(shared: Callable[[], LocalStack], tmp_path: Path) -> None:
    stack = shared()
    lam = stack.client("lambda")
    create_function(lam, "private", COUNTING_APP, environment={"COUNT_FILE": str(tmp_path / "c")})
    lam.put_function_concurrency(FunctionName="private", ReservedConcurrentExecutions=0)
    lam.invoke(FunctionName="private", InvocationType="Event", Payload=b'{"id": 1}')
    state = state_of(stack)
    assert mode(stack.state_dir) == 0o700
    assert mode(stack.state_dir / "stack.json") == 0o600
    assert mode(state) == 0o700
    files = [state / "functions.json", state / "moto.jsonl", state / "events.jsonl"]
    for path in files:
        assert mode(path) == 0o600, path
    # atomic writes leave no temporary files behind
    assert not [p for p in state.rglob("*") if p.name.endswith(".tmp")]
    doc = json.loads((state / "functions.json").read_text())
    assert [f["name"] for f in doc["functions"]] == ["private"] and doc["functions"][0]["reserved"] == 0


def test_a_clean_stop_keeps_queued_events_for_the_next_start(shared: Callable[[], LocalStack], tmp_path: Path) -> None:
    count = tmp_path / "count.jsonl"
    first = shared(max_concurrency=1)
    lam = first.client("lambda")
    create_function(lam, "later", COUNTING_APP, environment={"COUNT_FILE": str(count)},
                    Tags={"kept": "yes"})
    lam.put_function_event_invoke_config(FunctionName="later", MaximumRetryAttempts=0)
    hold_the_account(first, tmp_path)  # its events wait for the account's one slot
    for i in range(3):
        lam.invoke(FunctionName="later", InvocationType="Event", Payload=json.dumps({"id": i}))
    first.stop()
    assert len(EventStore.read(state_of(first))) == 3

    assert not count.exists()
    second = shared()
    lam = second.client("lambda")
    fn = lam.get_function(FunctionName="later")
    assert fn["Tags"] == {"kept": "yes"}
    assert lam.get_function_event_invoke_config(FunctionName="later")["MaximumRetryAttempts"] == 0
    wait_for(lambda: not EventStore.read(state_of(second)), "the events to run")
    assert sorted(json.loads(line)["id"] for line in count.read_text().splitlines()) == [0, 1, 2]


def test_deleting_a_function_forgets_its_queued_events_and_code(shared: Callable[[], LocalStack], tmp_path: Path) -> None:
    stack = shared(max_concurrency=1)
    lam = stack.client("lambda")
    create_function(lam, "gone", COUNTING_APP, environment={"COUNT_FILE": str(tmp_path / "c")})
    hold_the_account(stack, tmp_path)
    lam.invoke(FunctionName="gone", InvocationType="Event", Payload=b"{}")
    assert len(EventStore.read(state_of(stack))) == 1
    code_dir = Path(json.loads((state_of(stack) / "functions.json").read_text())["functions"][0]["code_dir"])
    assert code_dir.is_dir()
    lam.delete_function(FunctionName="gone")
    assert EventStore.read(state_of(stack)) == []
    assert not code_dir.exists() and not code_dir.parent.exists()
    assert [f["name"] for f in json.loads((state_of(stack) / "functions.json").read_text())["functions"]] == ["holder"]


def test_a_conflicting_create_leaves_no_extracted_code(shared: Callable[[], LocalStack], tmp_path: Path) -> None:
    stack = shared()
    lam = stack.client("lambda")
    create_function(lam, "twice", COUNTING_APP)
    with pytest.raises(lam.exceptions.ResourceConflictException):
        create_function(lam, "twice", COUNTING_APP)
    kept = sorted(p.name for p in (stack.run_dir / "functions" / "twice").iterdir())  # type: ignore[operator]
    # the first create's code directory and its uploaded zip (Code.Location serves it), only
    assert len(kept) == 2 and kept[1] == kept[0] + ".zip", kept


def _saved_record(name: str, code_dir: Path, *, local_code: bool = False) -> dict[str, Any]:
    return {
        "name": name, "handler": "app.handler", "runtime": "python3.11", "role": "r",
        "timeout": 3, "memory_size": 128, "environment": {}, "description": "",
        "code_dir": str(code_dir), "local_code": local_code, "code_sha256": "x", "code_size": 1,
        "tags": {}, "reserved": None, "revision_id": str(uuid.uuid4()),
        "last_modified": "2026-01-01T00:00:00.000+0000", "event_invoke_config": None,
    }


def _write_state(state_dir: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    directory = state_dir / "shared" / "state"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


MARKER_APP = """
import os
open(os.environ.get("MARKER", "/tmp/never"), "w").close()  # runs at import: must never happen
def handler(event, context):
    return "ran"
"""


@pytest.mark.parametrize("where", ["outside", "dot-dot", "functions-root"])
def test_a_forged_zip_function_outside_the_code_directory_is_not_restored(
        shared: Callable[[], LocalStack], tmp_path: Path, where: str) -> None:
    functions = tmp_path / "state" / "shared" / "functions"
    evil = {"outside": tmp_path / "evil",
            "dot-dot": functions / "x" / "code-1" / ".." / ".." / ".." / "evil",
            "functions-root": functions}[where]
    (functions / "x" / "code-1").mkdir(parents=True, exist_ok=True)
    evil.mkdir(parents=True, exist_ok=True)
    evil_file = (evil / "app.py").resolve()
    marker = tmp_path / "marker"
    (evil / "app.py").write_text(MARKER_APP.replace('os.environ.get("MARKER", "/tmp/never")', repr(str(marker))))
    record = _saved_record("forged", evil)
    _write_state(tmp_path / "state", "functions.json",
                 json.dumps({"version": 1, "functions": [record]}).encode())
    stack = shared()
    lam = stack.client("lambda")
    assert lam.list_functions()["Functions"] == []
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="forged", Payload=b"{}")
    assert not marker.exists()
    assert evil_file.is_file()  # not removed either


@pytest.mark.parametrize("attack", ["writable-by-others", "symlink", "malformed", "wrong-version",
                                    "not-a-list"])
def test_an_untrusted_functions_file_is_set_aside_not_loaded(
        shared: Callable[[], LocalStack], tmp_path: Path, attack: str) -> None:
    code = tmp_path / "state" / "shared" / "functions" / "victim" / "code-000000000000"
    code.mkdir(parents=True)
    marker = tmp_path / "marker"
    (code / "app.py").write_text(MARKER_APP.replace('os.environ.get("MARKER", "/tmp/never")', repr(str(marker))))
    good = json.dumps({"version": 1, "functions": [_saved_record("victim", code)]}).encode()
    if attack == "writable-by-others":
        path = _write_state(tmp_path / "state", "functions.json", good, mode=0o666)
    elif attack == "symlink":
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_bytes(good)
        os.chmod(elsewhere, 0o600)
        path = _write_state(tmp_path / "state", "placeholder", b"")
        path = path.with_name("functions.json")
        path.symlink_to(elsewhere)
    elif attack == "malformed":
        path = _write_state(tmp_path / "state", "functions.json", good[: len(good) // 2])
    elif attack == "wrong-version":
        path = _write_state(tmp_path / "state", "functions.json", good.replace(b'"version": 1', b'"version": 99'))
    else:
        path = _write_state(tmp_path / "state", "functions.json", b'{"version": 1, "functions": {"a": 1}}')
    stack = shared()
    lam = stack.client("lambda")
    assert lam.list_functions()["Functions"] == []
    assert not marker.exists()
    refused = list(path.parent.glob("functions.json.refused-*"))
    assert len(refused) == 1  # set aside, not lost
    # the stack works and saves a fresh, private file
    create_function(lam, "fresh", COUNTING_APP)
    assert mode(path) == 0o600 and not path.is_symlink()


def _event_line(function: str, *, request_id: str | None = None, payload: bytes = b'{"id": "forged"}') -> bytes:
    return StoredEvent(function=function, request_id=request_id or str(uuid.uuid4()), payload=payload,
                       client_context=None, received=0.0, attempts=0, marker=None,
                       running=False).to_json() + b"\n"


def test_malformed_event_lines_are_skipped_and_nothing_else_is_lost(
        shared: Callable[[], LocalStack], tmp_path: Path) -> None:
    count = tmp_path / "count.jsonl"
    first = shared(max_concurrency=1)
    lam = first.client("lambda")
    create_function(lam, "target", COUNTING_APP, environment={"COUNT_FILE": str(count)})
    hold_the_account(first, tmp_path)
    lam.invoke(FunctionName="target", InvocationType="Event", Payload=b'{"id": "queued"}')
    first.stop()
    log = state_of(first) / "events.jsonl"
    removed = str(uuid.uuid4())
    with open(log, "ab") as f:
        f.write(b"{not json\n")
        f.write(b'{"version": 1, "function": "target"}\n')  # fields missing
        f.write(_event_line("target").replace(b'"version": 1', b'"version": 7'))
        f.write(_event_line("target", request_id="../../etc/passwd"))
        f.write(b'{"version": 1, "request_id": "' + b"a" * EVENT_FILE_LIMIT + b'"}\n')  # oversized
        f.write(_event_line("no-such-function"))  # dropped: its function does not exist
        f.write(_event_line("target", request_id=removed, payload=b'{"id": "removed"}'))
        f.write(json.dumps({"version": 1, "removed": removed}).encode() + b"\n")
        f.write(_event_line("target", payload=b'{"id": "torn"}')[:-20])  # killed mid-write
    second = shared()
    wait_for(lambda: not EventStore.read(state_of(second)), "the queued event to run")
    assert [json.loads(line)["id"] for line in count.read_text().splitlines()] == ["queued"]


@pytest.mark.parametrize("attack", ["writable-by-others", "symlink"])
def test_an_untrusted_event_log_is_set_aside_not_loaded(
        shared: Callable[[], LocalStack], tmp_path: Path, attack: str) -> None:
    count = tmp_path / "count.jsonl"
    first = shared()
    create_function(first.client("lambda"), "target", COUNTING_APP, environment={"COUNT_FILE": str(count)})
    first.stop()
    log = state_of(first) / "events.jsonl"
    forged = _event_line("target")
    if attack == "writable-by-others":
        log.write_bytes(forged)
        os.chmod(log, 0o666)
    else:
        elsewhere = tmp_path / "elsewhere.jsonl"
        elsewhere.write_bytes(forged)
        os.chmod(elsewhere, 0o600)
        log.unlink(missing_ok=True)
        log.symlink_to(elsewhere)
    second = shared()
    assert second.client("lambda").invoke(FunctionName="target", Payload=b'{"id": "real"}')["StatusCode"] == 200
    assert len(list(log.parent.glob("events.jsonl.refused-*"))) == 1  # set aside, not lost
    assert EventStore.read(state_of(second)) == []
    assert [json.loads(line)["id"] for line in count.read_text().splitlines()] == ["real"]
    # events are kept again, in a fresh private log
    second.client("lambda").invoke(FunctionName="target", InvocationType="Event", Payload=b'{"id": "later"}')
    assert mode(log) == 0o600 and not log.is_symlink()
    wait_for(lambda: len(count.read_text().splitlines()) == 2, "the new event to run")


def test_moto_journal_records_writes_only_and_forgets_on_reset(shared: Callable[[], LocalStack]) -> None:
    stack = shared()
    journal = state_of(stack) / "moto.jsonl"
    s3 = stack.client("s3")
    bucket = f"journal-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    s3.list_objects_v2(Bucket=bucket)
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="missing")
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(e["m"], e["p"]) for e in entries] == [("PUT", f"/{bucket}"), ("PUT", f"/{bucket}/k")]
    stack.reset_aws()
    assert journal.read_text() == ""


def test_moto_journal_skips_a_torn_line(tmp_path: Path) -> None:
    journal = MotoJournal(tmp_path / "state" / "moto.jsonl")
    journal.open()
    journal.append("PUT", "/bucket", "", {"Host": "127.0.0.1:1"}, b"")
    journal.close()
    with open(journal.path, "ab") as f:
        f.write(b'{"m": "PUT", "p": "/bucket/torn", "h": {}, "b": "aGVs')  # killed mid-write
    assert [e["p"] for e in journal.entries()] == ["/bucket"]


S3_AUTH = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"


def s3_entry(method: str, path: str, query: str = "", body: bytes = b"", **headers: str) -> dict[str, Any]:
    return {"m": method, "p": path, "q": query, "body": body,
            "h": {"Host": "127.0.0.1:5000", "Authorization": S3_AUTH, **headers}}


def delete_objects(*keys: str, version: str | None = None) -> bytes:
    objects = "".join(
        f"<Object><Key>{k}</Key>{f'<VersionId>{version}</VersionId>' if version else ''}</Object>" for k in keys
    )
    return f'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{objects}<Quiet>true</Quiet></Delete>'.encode()


def test_compaction_drops_objects_written_then_deleted() -> None:
    entries = [
        s3_entry("PUT", "/b"),  # 0 bucket
        s3_entry("PUT", "/b/tmp1"),  # 1 dropped: deleted by 3
        s3_entry("PUT", "/b/tmp2"),  # 2 dropped: deleted by 3
        s3_entry("POST", "/b", "delete=", delete_objects("tmp1", "tmp2")),  # 3 dropped: deletes nothing kept
        s3_entry("PUT", "/b/kept"),  # 4 dropped: overwritten by 5
        s3_entry("PUT", "/b/kept"),  # 5 kept
        s3_entry("PUT", "/b/src"),  # 6 kept: copied by 7
        s3_entry("PUT", "/b/dst", **{"x-amz-copy-source": "/b/src"}),  # 7 kept
        s3_entry("DELETE", "/b/src"),  # 8 kept: src had kept content
        s3_entry("PUT", "/b/single"),  # 9 dropped
        s3_entry("DELETE", "/b/single"),  # 10 dropped
        s3_entry("PUT", "/b/tagged"),  # 11 kept: tagged by 12
        s3_entry("PUT", "/b/tagged", "tagging="),  # 12 kept
        s3_entry("POST", "/b", "delete=", delete_objects("tagged")),  # 13 kept
        s3_entry("POST", "/b", "delete=", delete_objects("kept", version="v1")),  # 14 kept: versions
        {"m": "POST", "p": "/", "q": "", "body": b"", "h": {"X-Amz-Target": "DynamoDB_20120810.PutItem"}},  # 15
    ]
    assert compact_entries(entries) == [0, 5, 6, 7, 8, 11, 12, 13, 14, 15]


def test_compaction_leaves_versioned_buckets_alone() -> None:
    entries = [
        s3_entry("PUT", "/v"),
        s3_entry("PUT", "/v", "versioning=", b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"),
        s3_entry("PUT", "/v/k"),
        s3_entry("PUT", "/v/k"),
        s3_entry("DELETE", "/v/k"),
    ]
    assert compact_entries(entries) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("method", "path", "query", "headers", "body", "expected"), [
    ("GET", "/b/k", "", {}, b"", False),
    ("PUT", "/b/k", "", {}, b"data", True),
    ("DELETE", "/b/k", "", {}, b"", True),
    ("POST", "/b/k", "select=&select-type=2", {}, b"<x/>", False),
    ("POST", "/", "", {"X-Amz-Target": "DynamoDB_20120810.GetItem"}, b"{}", False),
    ("POST", "/", "", {"X-Amz-Target": "DynamoDB_20120810.Query"}, b"{}", False),
    ("POST", "/", "", {"X-Amz-Target": "DynamoDB_20120810.PutItem"}, b"{}", True),
    ("POST", "/", "", {"Content-Type": "application/x-www-form-urlencoded"}, b"Action=ListRoles&Version=2010-05-08", False),
    ("POST", "/", "", {"Content-Type": "application/x-www-form-urlencoded"}, b"Action=CreateRole&RoleName=r", True),
    ("POST", "/", "", {"Content-Type": "application/x-www-form-urlencoded"}, b"Action=AssumeRole&RoleArn=a", False),
    ("POST", "/moto-api/reset", "", {}, b"", False),
    ("POST", "/", "", {"X-Amz-Target": "Logs_20140328.PutLogEvents"}, b"{}", False),
    ("POST", "/", "", {"X-Amz-Target": "AmazonSQS.ReceiveMessage"}, b"{}", False),
    ("POST", "/", "", {"X-Amz-Target": "AmazonSQS.SendMessage"}, b"{}", True),
])
def test_only_writes_are_journaled(method: str, path: str, query: str, headers: dict[str, str],
                                   body: bytes, expected: bool) -> None:
    assert is_write(method, path, query, headers, body) is expected


def test_sweep_keeps_live_embedded_run_dirs(tmp_path: Path) -> None:
    from lambdarun.local.persist import sweep

    live = tmp_path / f"embedded-{os.getpid()}-abcdef12"
    dead = tmp_path / "embedded-999999999-abcdef12"  # beyond pid_max: never alive
    other = tmp_path / "embedded-notes"
    for d in (live, dead, other):
        d.mkdir()
    assert sweep(tmp_path) == {"run_dirs": 1, "code_dirs": 0}
    assert live.is_dir() and other.is_dir() and not dead.exists()


def test_sweep_removes_no_code_when_the_saved_functions_are_unreadable(tmp_path: Path) -> None:
    from lambdarun.local.persist import sweep

    code = tmp_path / "shared" / "functions" / "f" / "code-0123456789ab"
    code.mkdir(parents=True)
    _write_state(tmp_path, "functions.json", b"garbage")
    assert sweep(tmp_path, shared_code=True)["code_dirs"] == 0
    assert code.is_dir()
    _write_state(tmp_path, "functions.json", json.dumps({"version": 1, "functions": []}).encode())
    assert sweep(tmp_path, shared_code=True)["code_dirs"] == 1
    assert not code.exists()



def test_online_compaction_keeps_a_busy_journal_bounded(tmp_path: Path) -> None:
    journal = MotoJournal(tmp_path / "state" / "moto.jsonl", compact_above=64 * 1024)
    journal.open()
    s3 = {"Host": "127.0.0.1:5000", "Authorization": S3_AUTH}
    journal.append("PUT", "/bucket", "", s3, b"")
    journal.append("PUT", "/bucket/kept", "", s3, b"k" * 1000)
    for i in range(500):  # lambdarun's pattern: a payload object per call, deleted afterwards
        journal.append("PUT", f"/bucket/calls/{i}", "", s3, b"x" * 1000)
        journal.append("POST", "/bucket", "delete=", s3, delete_objects(f"calls/{i}"))
    journal.close()
    assert journal.path.stat().st_size < 3 * 64 * 1024  # ~2.5 MB without compaction
    paths = [e["p"] for e in journal.entries()]
    assert paths[:2] == ["/bucket", "/bucket/kept"]
    assert all(p.startswith("/bucket/calls/") or p == "/bucket" for p in paths[2:])
    assert mode(journal.path) == 0o600
    # what is left still means the same: the last objects written and not yet compacted
    journal.compact()
    assert [e["p"] for e in journal.entries()] == ["/bucket", "/bucket/kept"]


def test_event_log_keeps_the_latest_state_and_stays_bounded(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "state", compact_above=16 * 1024)
    kept = StoredEvent(function="f", request_id=str(uuid.uuid4()), payload=b'{"keep": 1}',
                       client_context=None, received=1.0, attempts=0, marker=None, running=False)
    store.put(kept)
    store.put(attrs.evolve(kept, attempts=1, running=True))
    for i in range(2000):  # delivered events come and go
        event = attrs.evolve(kept, request_id=str(uuid.uuid4()), received=2.0 + i)
        store.put(event)
        store.remove(event.request_id)
    store.remove(str(uuid.uuid4()))  # unknown: nothing written
    assert store.path.stat().st_size < 3 * 16 * 1024
    assert EventStore.read(tmp_path / "state") == [attrs.evolve(kept, attempts=1, running=True)]
    store.close()
    assert EventStore(tmp_path / "state").load() == [attrs.evolve(kept, attempts=1, running=True)]
    assert len(store.path.read_bytes().splitlines()) == 1  # load rewrote it with the live event only


def test_a_second_stack_on_the_same_state_is_refused(shared: Callable[[], LocalStack], tmp_path: Path) -> None:
    from lambdarun.errors import TargetError

    first = shared()
    # even when stack.json does not tell (e.g. two `up`s racing): the state directory is locked
    (first.state_dir / "stack.json").unlink()
    with pytest.raises(TargetError, match="already up"):
        LocalStack(first.state_dir, reuse=False, shared=True, stop_at_exit=False).start()
    assert first.client("lambda").list_functions()["Functions"] == []  # untouched
    first.stop()
    second = shared()  # the lock went with the first stack
    assert second.running


def test_an_attempt_cut_by_a_crash_counts_as_failed(shared: Callable[[], LocalStack], tmp_path: Path) -> None:
    count = tmp_path / "count.jsonl"
    first = shared()
    create_function(first.client("lambda"), "crashy", COUNTING_APP, environment={"COUNT_FILE": str(count)})
    first.stop()
    retried, exhausted, waiting = (str(uuid.uuid4()) for _ in range(3))
    lines = [  # as a service killed mid-attempt leaves them (async_retries: 2)
        StoredEvent("crashy", retried, b'{"id": "retried"}', None, 1.0, attempts=2, marker=None, running=True),
        StoredEvent("crashy", exhausted, b'{"id": "exhausted"}', None, 2.0, attempts=3, marker=None, running=True),
        StoredEvent("crashy", waiting, b'{"id": "waiting"}', None, 3.0, attempts=1, marker=None, running=False),
    ]
    (state_of(first) / "events.jsonl").write_bytes(b"".join(e.to_json() + b"\n" for e in lines))
    second = shared()
    wait_for(lambda: not EventStore.read(state_of(second)), "the restored events")
    wait_for(lambda: count.exists() and len(count.read_text().splitlines()) == 2, "two runs")
    assert sorted(json.loads(line)["id"] for line in count.read_text().splitlines()) == ["retried", "waiting"]
    failures = (second.run_dir / "logs" / "crashy" / "async-failures.jsonl").read_text().splitlines()  # type: ignore[operator]
    assert [json.loads(f)["requestContext"]["requestId"] for f in failures] == [exhausted]
    assert json.loads(failures[0])["requestContext"]["condition"] == "RetriesExhausted"
    service = second.service
    assert service is not None
    by_id = {r.request_id: r for r in service.records()}
    assert by_id[retried].attempts == 3 and by_id[retried].status == "succeeded"
    assert by_id[waiting].attempts == 2 and by_id[waiting].status == "succeeded"
    assert by_id[exhausted].status == "crashed"


def test_a_chunked_upload_is_journaled_with_its_whole_body(shared: Callable[[], LocalStack]) -> None:
    import http.client
    from urllib.parse import urlsplit

    stack = shared()
    bucket = f"chunked-{uuid.uuid4().hex[:8]}"
    stack.client("s3").create_bucket(Bucket=bucket)
    url = urlsplit(stack.endpoints.moto)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = [b"first chunk, ", b"second chunk"]
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    # signed as botocore signs over http: the headers and the SHA-256 of the whole body
    signing = AWSRequest(method="PUT", url=f"{stack.endpoints.moto}/{bucket}/streamed",
                         data=b"".join(body), headers={"Content-Type": "text/plain"})
    creds = stack.credentials
    S3SigV4Auth(Credentials(creds.access_key_id, creds.secret_access_key), "s3", stack.region).add_auth(signing)
    conn.request("PUT", f"/{bucket}/streamed", body=iter(body), encode_chunked=True, headers={
        **dict(signing.headers.items()), "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    assert response.status == 200, answer
    assert stack.client("s3").get_object(Bucket=bucket, Key="streamed")["Body"].read() == b"".join(body)
    journal = MotoJournal(state_of(stack) / "moto.jsonl")
    entry = [e for e in journal.entries() if e["p"] == f"/{bucket}/streamed"][0]
    assert entry["body"] == b"".join(body)
    assert "Transfer-Encoding" not in entry["h"]


def test_a_moto_journal_others_may_write_is_set_aside_not_replayed(tmp_path: Path) -> None:
    from werkzeug.wrappers import Response

    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:  # stands in for moto
        seen.append(environ["PATH_INFO"])
        return Response("ok")(environ, start_response)

    journal = MotoJournal(tmp_path / "state" / "moto.jsonl")
    journal.open()
    journal.append("PUT", "/bucket", "", {"Host": "127.0.0.1:1"}, b"")
    journal.close()
    assert journal.replay(app) == (1, 0) and seen == ["/bucket"]
    os.chmod(journal.path, 0o666)
    seen.clear()
    assert journal.replay(app) == (0, 0) and seen == []
    assert len(list(journal.path.parent.glob("moto.jsonl.refused-*"))) == 1
    assert journal.path.read_bytes() == b"" and mode(journal.path) == 0o600  # a fresh one


def test_status_tells_what_is_saved_for_the_next_up(shared: Callable[[], LocalStack], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lambdarun.local.cli import local

    stack = shared(max_concurrency=1)
    lam = stack.client("lambda")
    for name in ("one", "two"):
        create_function(lam, name, COUNTING_APP, environment={"COUNT_FILE": str(tmp_path / "c")})
    hold_the_account(stack, tmp_path)
    lam.invoke(FunctionName="one", InvocationType="Event", Payload=b"{}")
    stack.client("s3").create_bucket(Bucket=f"status-{uuid.uuid4().hex[:8]}")
    stack.stop()
    result = CliRunner().invoke(local, ["status", "--state-dir", str(stack.state_dir)])
    assert result.exit_code == 1
    assert "no local stack is up" in result.output
    assert "saved for the next `up`: 3 functions, 1 queued event, moto data" in result.output
