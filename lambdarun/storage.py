"""Default storage plugins: ``file://`` directories and ``s3://`` buckets."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from lambdarun.errors import StorageError, StorageKeyError
from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = ["FileStorage", "S3Storage", "check_key"]


def check_key(key: str) -> str:
    """``key`` if it is a valid storage key (relative, no ``..`` segment), else
    :class:`~lambdarun.errors.StorageError`: every storage validates its keys with it."""
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise StorageError(f"invalid storage key {key!r}: use a relative path without '..'")
    return key


_check_key = check_key


class FileStorage:
    """Blobs as files under a directory; writes are atomic (temp file + rename)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{url!r}: file URLs must be file:///absolute/path")
        self.url = url.rstrip("/")
        self.root = Path(unquote(parts.path))
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @staticmethod
    def _complete_temp_file(path: Path, data: bytes) -> Path:
        """``data`` in a new temporary file next to ``path`` (complete before it is moved or
        linked into place); the caller removes it if it stays. The folder is created only
        when it is missing (a hot path: one ``open`` where it exists)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        while True:
            tmp = path.parent / f".tmp-{os.urandom(8).hex()}"
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            except FileExistsError:
                continue
            break
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._complete_temp_file(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` only if ``key`` holds nothing yet (atomic: the
        complete file is hard-linked into place, which fails when the name exists)."""
        path = self._path(key)
        tmp = self._complete_temp_file(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageKeyError(f"no object {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        directory = base if prefix.endswith("/") or not prefix else base.parent
        if not directory.is_dir():
            return []
        keys = []
        for dirpath, _dirnames, filenames in os.walk(directory):
            for filename in filenames:
                if filename.startswith(".tmp-"):
                    continue
                rel = Path(dirpath, filename).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    keys.append(rel)
        return sorted(keys)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            # remove now-empty parent directories up to the root
            parent = path.parent
            while parent != self.root:
                try:  # rmdir refuses a folder that is not empty: no listing (O(entries)) needed
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def url_for(self, key: str) -> str:
        return f"{self.url}/{_check_key(key)}"


class S3Storage:
    """Blobs in ``s3://bucket/prefix`` through the target's shared S3 client."""

    def __init__(self, url: str, client: Any) -> None:
        parts = urlsplit(url)
        if not parts.netloc:
            raise StorageError(f"{url!r}: S3 URLs must be s3://bucket[/prefix]")
        self.url = url.rstrip("/")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.client = client

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` only if ``key`` holds nothing yet: a conditional
        ``PutObject`` (``If-None-Match: *``); False when S3 answers 412 PreconditionFailed
        (or 409 ConditionalRequestConflict for a concurrent conditional write)."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise
        return True

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            raise StorageKeyError(f"no object {key!r} in {self.url}") from None
        return response["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        if prefix.endswith("/") and not full.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", ()))
        return keys

    def delete(self, keys: Iterable[str]) -> None:
        batch: list[dict[str, str]] = []
        for key in keys:
            batch.append({"Key": self._key(key)})
            if len(batch) == 1000:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        response = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
        )
        errors = response.get("Errors") or []
        if errors:
            raise StorageError(f"could not delete {len(errors)} objects from {self.url}: {errors[:3]}")

    def url_for(self, key: str) -> str:
        return f"{self.url}/{_check_key(key)}"


@hookimpl(trylast=True)
def lambdarun_make_storage(url: str, session: Session) -> FileStorage | S3Storage | None:
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return FileStorage(url)
    if scheme == "s3":
        return S3Storage(url, session.target.client("s3"))
    return None
