"""Limits before work: bodies refused from Content-Length before they are read, zips checked
before they are extracted (size, symlinks, special files, paths), malformed input -> 400."""

from __future__ import annotations

import io
import json
import stat
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lambdarun.local import LocalStack
from lambdarun.local.options import UNZIPPED_CODE_LIMIT
from lambdarun.local.testing import create_function

from .conftest import create_function_body, function_exists, marker_source, raw_http

pytestmark = pytest.mark.timeout(180)

API = "/2015-03-31/functions"


def _code_dirs(local_stack: LocalStack, name: str) -> list[Path]:
    assert local_stack.run_dir is not None
    base = local_stack.run_dir / "functions" / name
    return list(base.rglob("*")) if base.exists() else []


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return buf.getvalue()


def _create(local_stack: LocalStack, name: str, zip_bytes: bytes) -> ClientError:
    lam = local_stack.client("lambda", retries={"total_max_attempts": 1})
    with pytest.raises(ClientError) as err:
        lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                            Handler="app.handler", Code={"ZipFile": zip_bytes})
    return err.value


def test_zip_bomb_is_refused_from_its_central_directory(local_stack: LocalStack, marker: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("app.py", marker_source(marker))
        with zf.open("padding.bin", "w", force_zip64=True) as out:
            chunk = b"\0" * (1 << 20)
            for _ in range(UNZIPPED_CODE_LIMIT // len(chunk) + 8):  # just over 250 MB of zeros
                out.write(chunk)
    data = buf.getvalue()
    assert len(data) < 1024 * 1024  # a small upload ...
    err = _create(local_stack, "zip-bomb", data)  # ... that unzips beyond Lambda's quota
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.response["Error"]["Code"] == "InvalidParameterValueException"
    assert err.response["Error"]["Message"] == f"Unzipped size must be smaller than {UNZIPPED_CODE_LIMIT} bytes"
    assert not function_exists(local_stack, "zip-bomb")
    assert _code_dirs(local_stack, "zip-bomb") == []
    assert not marker.exists()


def test_zip_whose_members_add_up_beyond_the_quota_is_refused(local_stack: LocalStack) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        chunk = b"\0" * (1 << 20)
        for i in range(3):
            with zf.open(f"part{i}.bin", "w") as out:
                for _ in range(90):  # 3 x 90 MiB > 250 MB
                    out.write(chunk)
    err = _create(local_stack, "zip-parts", buf.getvalue())
    assert err.response["Error"]["Code"] == "InvalidParameterValueException"
    assert _code_dirs(local_stack, "zip-parts") == []


def _unix_member(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


@pytest.mark.parametrize("member, data", [
    (_unix_member("app.py", stat.S_IFLNK | 0o777), b"/etc/passwd"),
    (_unix_member("lib", stat.S_IFLNK | 0o777), b"/"),
    (_unix_member("fifo", stat.S_IFIFO | 0o644), b""),
    (_unix_member("dev", stat.S_IFCHR | 0o644), b""),
    ("../escaped.py", b"x = 1"),
    ("pkg/../../escaped.py", b"x = 1"),
    ("/tmp/absolute-escape.py", b"x = 1"),
], ids=["symlink-file", "symlink-dir", "fifo", "char-device", "dotdot", "nested-dotdot", "absolute"])
def test_zip_with_links_special_files_or_escaping_paths_is_refused(
    local_stack: LocalStack, marker: Path, member: Any, data: bytes
) -> None:
    name = f"zip-evil-{abs(hash(str(getattr(member, 'filename', member)))) % 10**8}"
    members = [("handler.py", marker_source(marker).encode()), (member, data)]
    err = _create(local_stack, name, _zip(members))
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.response["Error"]["Code"] == "InvalidParameterValueException"
    assert not function_exists(local_stack, name)
    assert _code_dirs(local_stack, name) == []
    assert local_stack.run_dir is not None
    assert not list(local_stack.run_dir.rglob("escaped.py"))
    assert not Path("/tmp/absolute-escape.py").exists()
    assert not marker.exists()


def test_corrupt_zip_leaves_nothing_behind(local_stack: LocalStack) -> None:
    data = bytearray(_zip([("app.py", b"def handler(e, c):\n    return 1\n" * 200)]))
    data[40:80] = b"\xff" * 40  # damage the compressed data, keep the directory intact
    err = _create(local_stack, "zip-corrupt", bytes(data))
    assert err.response["Error"]["Code"] == "InvalidParameterValueException"
    assert _code_dirs(local_stack, "zip-corrupt") == []


# -- request bodies ---------------------------------------------------------------------


def _signed(local_stack: LocalStack, sign: Any, path: str, body: bytes = b"", **extra: str) -> dict[str, str]:
    return sign(local_stack.endpoints.lambda_ + path, "POST", body, extra=extra)


@pytest.mark.parametrize("length", [str(1 << 30), str(SIZE := 6_291_457), "99999999999999999999999"])
def test_oversized_body_is_refused_before_it_is_read(local_stack: LocalStack, sign: Any, length: str) -> None:
    url = local_stack.endpoints.lambda_
    path = f"{API}/anything/invocations"
    headers = {**_signed(local_stack, sign, path), "Content-Length": length}
    # the body is never sent: the answer must come from the declared length alone
    resp = raw_http(url, "POST", path, headers=headers, send_body=False, timeout=10)
    if len(length) > 19:
        assert resp.status == 400
    else:
        assert resp.status == 413
        assert resp.header("x-amzn-errortype") == "RequestEntityTooLargeException"
        assert json.loads(resp.body)["Message"] == (
            "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
    assert SIZE


def test_oversized_event_and_create_function_bodies(local_stack: LocalStack, sign: Any) -> None:
    url = local_stack.endpoints.lambda_
    path = f"{API}/anything/invocations"
    headers = {**_signed(local_stack, sign, path, **{"X-Amz-Invocation-Type": "Event"}),
               "Content-Length": str(1_048_577)}
    resp = raw_http(url, "POST", path, headers=headers, send_body=False, timeout=10)
    assert resp.status == 413
    assert json.loads(resp.body)["Message"].endswith("1048576 bytes for the InvokeAsync operation")
    headers = {**_signed(local_stack, sign, API), "Content-Length": str(70_167_212)}
    resp = raw_http(url, "POST", API, headers=headers, send_body=False, timeout=10)
    assert resp.status == 413
    assert json.loads(resp.body)["Message"].endswith("70167211 bytes for the CreateFunction operation")


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "0x10", " ", None])
def test_malformed_or_missing_content_length_is_answered_not_hung(
    local_stack: LocalStack, sign: Any, length: str | None
) -> None:
    url = local_stack.endpoints.lambda_
    path = f"{API}/anything/invocations"
    headers = _signed(local_stack, sign, path, b"{}")
    if length is not None:
        headers["Content-Length"] = length
    threads = threading.active_count()
    resp = raw_http(url, "POST", path, headers=headers, body=b"{}", timeout=10)
    assert resp.status == 400
    assert resp.header("x-amzn-errortype") == "InvalidRequestContentException"
    # the service still answers, and the connection's thread is gone
    assert local_stack.client("lambda").list_functions()["Functions"] is not None
    assert threading.active_count() <= threads + 1


def test_unsigned_oversized_body_is_refused_as_unsigned(local_stack: LocalStack) -> None:
    url = local_stack.endpoints.lambda_
    resp = raw_http(url, "POST", API, headers={"Host": url.split("//")[1], "Content-Length": str(1 << 30)},
                    send_body=False, timeout=10)
    assert resp.status == 403


def test_moto_refuses_malformed_and_oversized_lengths(local_stack: LocalStack, sign: Any) -> None:
    url = local_stack.endpoints.moto
    for length, status in (("-1", 400), ("abc", 400), (str(6 * 1024**3), 413)):
        headers = sign(url + "/bucket-x/key", "PUT", b"", service="s3",
                       extra={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
        headers["Content-Length"] = length
        resp = raw_http(url, "PUT", "/bucket-x/key", headers=headers, send_body=False, timeout=10)
        assert resp.status == status, length


# -- malformed requests -------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"{not json", b"[1, 2]", b'"text"',
    json.dumps({"FunctionName": 5, "Handler": "app.handler", "Code": {"ZipFile": ""}}).encode(),
    json.dumps({"FunctionName": "typed", "Handler": "app.handler", "Timeout": "long",
                "Code": {"S3Bucket": "__local__", "S3Key": "/tmp"}}).encode(),
    json.dumps({"FunctionName": "typed", "Handler": "app.handler", "Environment": "x",
                "Code": {"S3Bucket": "__local__", "S3Key": "/tmp"}}).encode(),
    json.dumps({"FunctionName": "typed", "Handler": "app.handler", "Code": "zip"}).encode(),
    json.dumps({"FunctionName": "typed", "Handler": ["app"], "Code": {"ZipFile": 7}}).encode(),
], ids=["broken", "list", "string", "int-name", "str-timeout", "str-environment", "str-code", "wrong-types"])
def test_malformed_create_function_is_a_400(local_stack: LocalStack, sign: Any, body: bytes) -> None:
    url = local_stack.endpoints.lambda_
    headers = {**_signed(local_stack, sign, API, body), "Content-Length": str(len(body))}
    resp = raw_http(url, "POST", API, headers=headers, body=body, timeout=10)
    assert resp.status == 400, resp.body
    assert resp.header("x-amzn-errortype") in ("InvalidRequestContentException", "InvalidParameterValueException")
    assert not function_exists(local_stack, "typed")


def test_the_per_operation_payload_limits_still_hold(local_stack: LocalStack) -> None:
    lam = local_stack.client("lambda", retries={"total_max_attempts": 1})
    create_function(lam, "limits-echo", "def handler(e, c):\n    return len(e['x'])\n")
    try:
        ok = lam.invoke(FunctionName="limits-echo", Payload=json.dumps({"x": "a" * 6_000_000}))
        assert json.loads(ok["Payload"].read()) == 6_000_000
        with pytest.raises(ClientError) as err:
            lam.invoke(FunctionName="limits-echo", Payload=json.dumps({"x": "a" * 6_291_456}))
        assert err.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
        assert lam.invoke(FunctionName="limits-echo", InvocationType="Event",
                          Payload=json.dumps({"x": "a" * 1_000_000}))["StatusCode"] == 202
        with pytest.raises(ClientError) as err:
            lam.invoke(FunctionName="limits-echo", InvocationType="Event",
                       Payload=json.dumps({"x": "a" * 1_048_576}))
        assert err.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    finally:
        lam.delete_function(FunctionName="limits-echo")


def test_zip_whose_directory_understates_the_size_is_refused(local_stack: LocalStack) -> None:
    """A central directory (and local header) that claim 10 bytes for a member that inflates
    to 50 MB: extraction never writes beyond the claim, the zip is refused, nothing stays."""
    import struct
    import zlib

    payload = b"\0" * (50 << 20)
    data = bytearray(_zip([("app.py", b"def handler(e, c):\n    return 1\n"), ("blob.bin", payload)]))
    crc = zlib.crc32(payload)
    # patch the uncompressed size of blob.bin in its local header and its directory entry
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            crc_at = offset - 8
            if struct.unpack_from("<I", data, start + crc_at)[0] == crc:
                struct.pack_into("<I", data, start + offset, 10)
            start += 4
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        assert zf.getinfo("blob.bin").file_size == 10  # the lie is in place
    err = _create(local_stack, "zip-lying", bytes(data))
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.response["Error"]["Code"] == "InvalidParameterValueException"
    assert not function_exists(local_stack, "zip-lying")
    assert _code_dirs(local_stack, "zip-lying") == []
