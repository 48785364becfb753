"""``mem://name``: blobs in this process's memory, one dict per name (a lambdarun storage plugin)."""

import threading

from lambdarun import hookimpl
from lambdarun.errors import StorageKeyError
from lambdarun.storage import check_key

_stores: dict[str, dict[str, bytes]] = {}  # mem://name -> blobs, shared by every session
_lock = threading.Lock()


class MemoryStorage:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        with _lock:
            self.blobs = _stores.setdefault(self.url, {})

    def put(self, key: str, data: bytes) -> None:
        self.blobs[check_key(key)] = bytes(data)

    def create(self, key: str, data: bytes) -> bool:  # atomic: claims rely on it
        with _lock:
            if check_key(key) in self.blobs:
                return False
            self.blobs[key] = bytes(data)
            return True

    def get(self, key: str) -> bytes:
        try:
            return self.blobs[check_key(key)]
        except KeyError:
            raise StorageKeyError(f"no object {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        return check_key(key) in self.blobs

    def list(self, prefix: str) -> list[str]:
        return sorted(key for key in list(self.blobs) if key.startswith(prefix))

    def delete(self, keys) -> None:
        for key in keys:
            self.blobs.pop(check_key(key), None)

    def url_for(self, key: str) -> str:
        return f"{self.url}/{check_key(key)}"


@hookimpl
def lambdarun_make_storage(url, session):
    return MemoryStorage(url) if url.startswith("mem://") else None  # None: "not my scheme"
