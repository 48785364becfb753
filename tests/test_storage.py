"""Storage hooks: file:// and s3:// defaults, and a user plugin overriding them."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid

import pytest

from lambdarun import hookimpl
from lambdarun.errors import StorageError, StorageKeyError
from lambdarun.storage import check_key
from lambdarun.testing.conformance import StorageConformance


def exercise(storage):
    storage.put("runs/a/1", b"one")
    storage.put("runs/a/2", b"two")
    storage.put("runs/b/1", b"three")
    assert storage.get("runs/a/2") == b"two"
    assert storage.exists("runs/a/1") and not storage.exists("runs/a/3")
    assert sorted(storage.list("runs/a/")) == ["runs/a/1", "runs/a/2"]
    assert sorted(storage.list("runs/")) == ["runs/a/1", "runs/a/2", "runs/b/1"]
    storage.put("runs/a/1", b"replaced")
    assert storage.get("runs/a/1") == b"replaced"
    storage.delete(["runs/a/1", "runs/a/2", "runs/a/missing"])
    assert storage.list("runs/a/") == []
    with pytest.raises(StorageKeyError, match="runs/a/1"):
        storage.get("runs/a/1")
    assert storage.url_for("runs/b/1") == storage.url + "/runs/b/1"
    assert storage.create("runs/c/1", b"first") is True
    assert storage.create("runs/c/1", b"second") is False
    assert storage.get("runs/c/1") == b"first"
    storage.delete(["runs/c/1"])


def test_file_storage(lambdarun_session, tmp_path):
    session = lambdarun_session()
    storage = session.pm.hook.lambdarun_make_storage(url=(tmp_path / "blobs").as_uri(), session=session)
    exercise(storage)
    assert not (tmp_path / "blobs" / "runs" / "a").exists()
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.put("../escape", b"x")  # empty directories are removed


def test_s3_storage_on_moto_server(aws_session):
    bucket = f"lr-test-{uuid.uuid4().hex[:8]}"
    aws_session.target.client("s3").create_bucket(Bucket=bucket)
    storage = aws_session.storage(f"s3://{bucket}/prefix")
    exercise(storage)
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.put("a/../../escape", b"x")
    keys = aws_session.target.client("s3").list_objects_v2(Bucket=bucket)["Contents"]
    assert [k["Key"] for k in keys] == ["prefix/runs/b/1"]  # the prefix is honoured
    # open_url splits an object URL into (storage of its parent, key)
    parent, key = aws_session.open_url(f"s3://{bucket}/prefix/runs/b/1")
    assert parent.get(key) == b"three"


def test_s3_storage_deletes_more_than_one_batch(aws_session):
    bucket = f"lr-test-{uuid.uuid4().hex[:8]}"
    aws_session.target.client("s3").create_bucket(Bucket=bucket)
    storage = aws_session.storage(f"s3://{bucket}")
    keys = [f"k/{i:04d}" for i in range(1001)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: storage.put(key, b""), keys))
    assert len(storage.list("k/")) == 1001  # paginated listing
    storage.delete(keys)
    assert storage.list("k/") == []


class MemoryStorage:
    def __init__(self, url):
        self.url, self.blobs = url, {}
        self.lock = threading.Lock()

    def put(self, key, data):
        self.blobs[check_key(key)] = bytes(data)

    def create(self, key, data):
        with self.lock:
            if check_key(key) in self.blobs:
                return False
            self.blobs[key] = bytes(data)
            return True

    def get(self, key):
        try:
            return self.blobs[check_key(key)]
        except KeyError:
            raise StorageKeyError(key) from None

    def exists(self, key):
        return key in self.blobs

    def list(self, prefix):
        return sorted(k for k in self.blobs if k.startswith(prefix))

    def delete(self, keys):
        for key in keys:
            self.blobs.pop(key, None)

    def url_for(self, key):
        return f"{self.url}/{check_key(key)}"


class MemoryStoragePlugin:
    """Overrides the default for file:// URLs and adds mem://."""

    @hookimpl
    def lambdarun_make_storage(self, url, session):
        if url.startswith(("mem://", "file://")):
            return MemoryStorage(url)
        return None


def test_user_plugin_overrides_default_storage(lambdarun_session, tmp_path):
    session = lambdarun_session(MemoryStoragePlugin())
    storage = session.storage((tmp_path / "never").as_uri())
    assert isinstance(storage, MemoryStorage)
    exercise(storage)
    assert not (tmp_path / "never").exists()  # the default never ran
    assert isinstance(session.storage("mem://x"), MemoryStorage)
    with pytest.raises(StorageError, match="no storage plugin handles 'gopher://x'"):
        session.storage("gopher://x")


def test_storage_is_cached_per_url(lambdarun_session, tmp_path):
    session = lambdarun_session(overrides={"storage_url": tmp_path.as_uri()})
    assert session.storage() is session.storage(tmp_path.as_uri() + "/")


# -- the public conformance suite (lambdarun.testing.conformance) on the built-in storages --


class TestFileStorageConformance(StorageConformance):
    @pytest.fixture
    def storage(self, lambdarun_session, tmp_path):
        session = lambdarun_session()
        return session.storage((tmp_path / "blobs").as_uri())


class TestS3StorageConformance(StorageConformance):
    @pytest.fixture
    def storage(self, aws_session):
        bucket = f"lr-conformance-{uuid.uuid4().hex[:8]}"
        aws_session.target.client("s3").create_bucket(Bucket=bucket)
        return aws_session.storage(f"s3://{bucket}/prefix")


class TestMemoryStorageConformance(StorageConformance):
    """The user-plugin storage defined above conforms too (it validates keys like the built-ins)."""

    @pytest.fixture
    def storage(self, lambdarun_session):
        return lambdarun_session(MemoryStoragePlugin()).storage("mem://conformance")
