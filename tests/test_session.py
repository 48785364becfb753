"""Session: derived sessions under races, and storages reused across object URLs."""

from __future__ import annotations

import threading
import time

import pytest

from lambdarun import hookimpl
from lambdarun.config import Settings
from lambdarun.errors import UntrustedLocationError


def test_racing_derives_build_one_child(lambdarun_session, monkeypatch):
    session = lambdarun_session()
    real = Settings.with_overrides
    built = []

    def slow_with_overrides(self, overrides):
        built.append(overrides)
        time.sleep(0.2)  # widens the race window; the assertions below never wait on time
        return real(self, overrides)

    monkeypatch.setattr(Settings, "with_overrides", slow_with_overrides)
    go = threading.Event()
    children = []

    def derive():
        go.wait(30)
        children.append(session.derive({"max_workers": 7}))

    threads = [threading.Thread(target=derive) for _ in range(4)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=60)
    monkeypatch.setattr(Settings, "with_overrides", real)
    assert len(children) == 4
    assert len(built) == 1, f"{len(built)} children were built for the same overrides"
    assert len({id(c) for c in children}) == 1
    assert children[0].owns_target is False and session.owns_target is True
    assert session.derive({"max_workers": 7}) is children[0]


class CountingStorage:
    """A plugin counting the storages opened (it opens none itself)."""

    def __init__(self):
        self.urls = []

    @hookimpl(tryfirst=True)
    def lambdarun_make_storage(self, url, session):
        self.urls.append(url)
        return None


def test_objects_under_the_storage_prefix_reuse_one_storage(aws_session):
    """A warm Lambda serving one attempt after another (each under its own prefix, as
    lambdarun-covalent writes) opens its storage once, not once per attempt (moto's S3)."""
    counter = CountingStorage()
    aws_session.pm.register(counter)
    prefix = "s3://lambdarun-session-tests/calls"
    session = aws_session.derive({"storage_url": prefix, "signing_key": "k" * 32})
    session.target.client("s3").create_bucket(Bucket="lambdarun-session-tests")
    for attempt in range(50):
        url = f"{prefix}/run/task-{attempt}-{attempt:08x}/outcome"
        storage, key = session.open_event_url(url, field="result_url")
        storage.put(key, b"x%d" % attempt)
        assert storage.url_for(key) == url
    assert counter.urls == [prefix]
    body = session.target.client("s3").get_object(Bucket="lambdarun-session-tests", Key="calls/run/task-49-00000031/outcome")
    assert body["Body"].read() == b"x49"
    # the prefix check still comes first: nothing outside it is opened
    with pytest.raises(UntrustedLocationError):
        session.open_event_url("s3://lambdarun-session-tests/elsewhere/x", field="result_url")
    assert counter.urls == [prefix]


def test_open_url_outside_any_open_storage_opens_its_parent(lambdarun_session, tmp_path):
    counter = CountingStorage()
    session = lambdarun_session(counter, overrides={"storage_url": (tmp_path / "a").as_uri()})
    other = (tmp_path / "b").as_uri()
    storage, key = session.open_url(f"{other}/obj")
    assert (counter.urls, key) == ([other], "obj")
    again, key = session.open_url(f"{other}/deeper/obj")
    assert again is storage and key == "deeper/obj" and counter.urls == [other]
