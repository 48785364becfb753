"""Every local endpoint authenticates: SigV4 with the stack's own credentials, no browser,
no CORS. Each attack is refused AND leaves no trace (no marker file, nothing created)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from lambdarun.local import LocalStack
from lambdarun.local.testing import create_function

from .conftest import (
    BROWSER,
    create_function_body,
    function_exists,
    marker_source,
    marker_zip,
    raw_http,
    signed_headers,
)

pytestmark = pytest.mark.timeout(120)

API = "/2015-03-31/functions"


def _json(resp: Any) -> dict[str, Any]:
    return json.loads(resp.body or b"{}")


def _no_cors(resp: Any) -> None:
    assert not [h for h in resp.headers if h.startswith("access-control-")], resp.headers


# -- the Lambda API ---------------------------------------------------------------------


def test_cross_origin_simple_post_cannot_create_or_invoke(local_stack: LocalStack, marker: Path) -> None:
    url = local_stack.endpoints.lambda_
    host = url.split("//", 1)[1]
    body = create_function_body("browser-attack", marker_zip(marker))
    # what a web page can send without a preflight: text/plain, its own Origin
    resp = raw_http(url, "POST", API, headers={
        "Host": host, "Content-Type": "text/plain", "Content-Length": str(len(body)), **BROWSER,
    }, body=body)
    assert resp.status == 403 and resp.header("x-amzn-errortype") == "AccessDeniedException"
    _no_cors(resp)
    resp = raw_http(url, "POST", f"{API}/browser-attack/invocations", headers={
        "Host": host, "Content-Type": "text/plain", "Content-Length": "2", "Origin": "http://evil.example",
    }, body=b"{}")
    assert resp.status == 403
    assert not function_exists(local_stack, "browser-attack")
    assert not marker.exists()


def test_browser_markers_are_refused_even_when_signed(local_stack: LocalStack, sign: Any, marker: Path) -> None:
    url = local_stack.endpoints.lambda_
    body = create_function_body("signed-from-a-browser", marker_zip(marker))
    for header, value in (("Origin", "http://127.0.0.1:1"), ("Sec-Fetch-Site", "same-site"),
                          ("Sec-Fetch-Mode", "cors")):
        headers = sign(url + API, "POST", body, extra={"Content-Type": "application/json"})
        resp = raw_http(url, "POST", API, headers={**headers, "Content-Length": str(len(body)),
                                                   header: value}, body=body)
        assert resp.status == 403, header
        assert resp.header("x-amzn-errortype") == "AccessDeniedException"
    assert not function_exists(local_stack, "signed-from-a-browser")
    assert not marker.exists()


def test_preflight_is_refused_without_cors_headers(local_stack: LocalStack) -> None:
    url = local_stack.endpoints.lambda_
    resp = raw_http(url, "OPTIONS", API, headers={
        "Host": url.split("//", 1)[1], "Origin": "http://evil.example",
        "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
    })
    assert resp.status == 403
    _no_cors(resp)


def test_unsigned_requests_are_refused(local_stack: LocalStack, marker: Path) -> None:
    url = local_stack.endpoints.lambda_
    host = url.split("//", 1)[1]
    body = create_function_body("unsigned", marker_zip(marker))
    resp = raw_http(url, "POST", API, headers={"Host": host, "Content-Type": "application/json",
                                               "Content-Length": str(len(body))}, body=body)
    assert resp.status == 403
    assert _json(resp)["Message"] == "The security token included in the request is invalid."
    assert resp.header("x-amzn-errortype") == "UnrecognizedClientException"
    # boto3 without signing (botocore.UNSIGNED)
    lam = boto3.session.Session(region_name="us-east-1").client(
        "lambda", endpoint_url=url, config=Config(signature_version=botocore.UNSIGNED,
                                                  retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as err:
        create_function(lam, "unsigned-boto3", marker_source(marker))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"
    with pytest.raises(ClientError):
        lam.list_functions()
    assert not function_exists(local_stack, "unsigned") and not function_exists(local_stack, "unsigned-boto3")
    assert not marker.exists()


def _client(local_stack: LocalStack, service: str, key: str, secret: str) -> Any:
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                 region_name="us-east-1").client(
        service, endpoint_url=local_stack.endpoints.url(service),
        config=Config(retries={"total_max_attempts": 1}))


def test_wrong_key_and_wrong_secret_are_refused(local_stack: LocalStack, marker: Path) -> None:
    creds = local_stack.credentials
    for key, secret, code in (
        ("AKIAIOSFODNN7EXAMPLE", creds.secret_access_key, "UnrecognizedClientException"),
        ("testing", "testing", "UnrecognizedClientException"),
        (creds.access_key_id, creds.secret_access_key[:-1] + "x", "InvalidSignatureException"),
    ):
        lam = _client(local_stack, "lambda", key, secret)
        with pytest.raises(ClientError) as err:
            create_function(lam, "wrong-creds", marker_source(marker))
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert err.value.response["Error"]["Code"] == code
    assert not function_exists(local_stack, "wrong-creds")
    assert not marker.exists()


def test_a_tampered_body_is_refused(local_stack: LocalStack, sign: Any, marker: Path, tmp_path: Path) -> None:
    url = local_stack.endpoints.lambda_
    harmless = create_function_body("tampered", marker_zip(tmp_path / "harmless"))
    evil = create_function_body("tampered", marker_zip(marker))
    headers = sign(url + API, "POST", harmless, extra={"Content-Type": "application/json"})
    resp = raw_http(url, "POST", API, headers={**headers, "Content-Length": str(len(evil))}, body=evil)
    assert resp.status == 403 and resp.header("x-amzn-errortype") == "InvalidSignatureException"
    assert not function_exists(local_stack, "tampered")
    # a replay to another path (the signature covers the path)
    headers = sign(url + API + "/x/invocations", "POST", b"{}")
    resp = raw_http(url, "POST", API + "/y/invocations", headers={**headers, "Content-Length": "2"}, body=b"{}")
    assert resp.status == 403 and resp.header("x-amzn-errortype") == "InvalidSignatureException"
    assert not marker.exists()


@pytest.mark.parametrize("minutes", [-20, 20])
def test_a_signature_more_than_15_minutes_off_is_refused(local_stack: LocalStack, sign: Any,
                                                         marker: Path, minutes: int) -> None:
    url = local_stack.endpoints.lambda_
    body = create_function_body(f"skewed{minutes + 100}", marker_zip(marker))
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
    headers = sign(url + API, "POST", body, when=when, extra={"Content-Type": "application/json"})
    resp = raw_http(url, "POST", API, headers={**headers, "Content-Length": str(len(body))}, body=body)
    assert resp.status == 403 and resp.header("x-amzn-errortype") == "InvalidSignatureException"
    message = _json(resp)["Message"]
    assert message.startswith("Signature expired:" if minutes < 0 else "Signature not yet current:")
    assert not function_exists(local_stack, f"skewed{minutes + 100}")
    assert not marker.exists()
    # within the window it is accepted (the same request, 10 minutes off)
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes // 2)
    headers = sign(url + API, "GET", b"", when=when)
    assert raw_http(url, "GET", API, headers=headers).status == 200


def test_the_extension_api_needs_a_signature(local_stack: LocalStack, sign: Any) -> None:
    url = local_stack.endpoints.lambda_
    host = url.split("//", 1)[1]
    for method, path, body in (("GET", "/_lambdarun/health", b""), ("GET", "/_lambdarun/invocations", b""),
                               ("GET", "/_lambdarun/functions", b""),
                               ("POST", "/_lambdarun/functions/x/stop", b'{"marker": "m"}')):
        resp = raw_http(url, method, path, headers={"Host": host, "Content-Length": str(len(body))}, body=body)
        assert resp.status == 403, path
        assert b"pid" not in resp.body and b"invocations" not in resp.body
        signed = sign(url + path, method, body)
        resp = raw_http(url, method, path, headers={**signed, "Content-Length": str(len(body))}, body=body)
        assert resp.status in (200, 404), (path, resp.body)


def test_runtime_api_refuses_browsers_and_other_hosts(local_stack: LocalStack) -> None:
    lam = local_stack.client("lambda")
    create_function(lam, "runtime-address", "import os\ndef handler(e, c):\n    return os.environ['AWS_LAMBDA_RUNTIME_API']\n")
    try:
        address = json.loads(lam.invoke(FunctionName="runtime-address")["Payload"].read())
        url = f"http://{address}"
        # another process of this very user, clean headers: not the environment's runtime
        resp = raw_http(url, "GET", "/2018-06-01/runtime/invocation/next", headers={"Host": address})
        assert resp.status == 403
        resp = raw_http(url, "POST", "/2018-06-01/runtime/invocation/x/response",
                        headers={"Host": address, "Content-Length": "4"}, body=b'"no"')
        assert resp.status == 403
        for headers in ({"Host": address, "Origin": "http://evil.example"},
                        {"Host": address, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "cross-site"},
                        {"Host": f"rebound.test:{address.split(':')[1]}"}):
            resp = raw_http(url, "GET", "/2018-06-01/runtime/invocation/next", headers=headers)
            assert resp.status == 403, headers
        resp = raw_http(url, "OPTIONS", "/2018-06-01/runtime/invocation/next",
                        headers={"Host": address, "Origin": "http://evil.example"})
        assert resp.status == 403
        _no_cors(resp)
        # the environment was not disturbed: the next invocation is served by it
        assert json.loads(lam.invoke(FunctionName="runtime-address")["Payload"].read()) == address
    finally:
        lam.delete_function(FunctionName="runtime-address")


# -- moto (S3, DynamoDB, IAM, STS) ------------------------------------------------------


def test_moto_refuses_cross_origin_and_anonymous_requests(local_stack: LocalStack) -> None:
    s3 = local_stack.client("s3")
    s3.create_bucket(Bucket="guarded")
    url = local_stack.endpoints.moto
    host = url.split("//", 1)[1]
    attacks = [
        ("PUT", "/guarded/planted", {"Content-Type": "text/plain", **BROWSER}, b"evil"),
        ("PUT", "/guarded/planted", {"Content-Type": "text/plain"}, b"evil"),  # anonymous
        ("POST", "/guarded/planted?uploads", {"Origin": "http://evil.example"}, b""),
    ]
    for method, path, headers, body in attacks:
        resp = raw_http(url, method, path, headers={"Host": host, "Content-Length": str(len(body)), **headers}, body=body)
        assert resp.status == 403, (method, path, resp.body)
        assert b"<Code>AccessDenied</Code>" in resp.body
        _no_cors(resp)
    for path in ("/", "/guarded", "/guarded/planted", "/moto-api/data.json"):  # anonymous reads
        resp = raw_http(url, "GET", path, headers={"Host": host})
        assert resp.status == 403, path
        assert b"guarded" not in resp.body
    resp = raw_http(url, "OPTIONS", "/guarded/planted", headers={
        "Host": host, "Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"})
    assert resp.status == 403
    _no_cors(resp)
    # anonymous reset would wipe every bucket
    resp = raw_http(url, "POST", "/moto-api/reset", headers={"Host": host, "Content-Length": "0"})
    assert resp.status == 403
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket="guarded", Key="planted")
    assert err.value.response["Error"]["Code"] == "404"
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]].count("guarded") == 1
    # a signed answer carries no CORS headers either (moto would add them for an Origin)
    signed = raw_http(url, "GET", "/guarded", headers=signed_headers(
        url + "/guarded", "GET", b"", key=local_stack.credentials.access_key_id,
        secret=local_stack.credentials.secret_access_key, service="s3"))
    assert signed.status == 200
    _no_cors(signed)


def test_moto_refuses_unsigned_and_wrong_credentials_in_each_services_shape(local_stack: LocalStack) -> None:
    creds = local_stack.credentials
    unsigned = boto3.session.Session(region_name="us-east-1").client(
        "s3", endpoint_url=local_stack.endpoints.moto,
        config=Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as err:
        unsigned.put_object(Bucket="unsigned-bucket", Key="k", Body=b"x")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    cases = [
        ("s3", lambda c: c.create_bucket(Bucket="wrong-key-bucket"), "AKIAWRONGWRONGWRONG0", creds.secret_access_key, "InvalidAccessKeyId", 403),
        ("s3", lambda c: c.create_bucket(Bucket="wrong-key-bucket"), creds.access_key_id, "x" * 40, "SignatureDoesNotMatch", 403),
        ("dynamodb", lambda c: c.list_tables(), "AKIAWRONGWRONGWRONG0", creds.secret_access_key, "UnrecognizedClientException", 400),
        ("dynamodb", lambda c: c.list_tables(), creds.access_key_id, "x" * 40, "InvalidSignatureException", 400),
        ("sts", lambda c: c.get_caller_identity(), "AKIAWRONGWRONGWRONG0", creds.secret_access_key, "InvalidClientTokenId", 403),
        ("iam", lambda c: c.create_user(UserName="intruder"), creds.access_key_id, "x" * 40, "SignatureDoesNotMatch", 403),
    ]
    for service, call, key, secret, code, status in cases:
        client = _client(local_stack, service, key, secret)
        with pytest.raises(ClientError) as err:
            call(client)
        assert err.value.response["Error"]["Code"] == code, service
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status, service
    s3 = local_stack.client("s3")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "wrong-key-bucket" not in names and "unsigned-bucket" not in names
    iam = local_stack.client("iam")
    assert "intruder" not in [u["UserName"] for u in iam.list_users()["Users"]]


def test_the_stacks_own_clients_work_with_every_service(local_stack: LocalStack, tmp_path: Path) -> None:
    s3 = local_stack.client("s3")
    s3.create_bucket(Bucket="own-client")
    s3.put_object(Bucket="own-client", Key="a b/c+d.txt", Body=b"x" * 70_000)
    assert s3.get_object(Bucket="own-client", Key="a b/c+d.txt")["Body"].read() == b"x" * 70_000
    src = tmp_path / "big.bin"
    src.write_bytes(b"y" * (9 * 1024 * 1024))  # a multipart upload through s3transfer
    s3.upload_file(str(src), "own-client", "big.bin")
    assert s3.head_object(Bucket="own-client", Key="big.bin")["ContentLength"] == 9 * 1024 * 1024
    ddb = local_stack.client("dynamodb")
    ddb.create_table(TableName="own", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName="own", Item={"k": {"S": "v"}})
    assert local_stack.client("sts").get_caller_identity()["Account"]
    local_stack.client("iam").list_roles()
    # a presigned URL is refused (nothing of ours uses one; a leaked URL must not work)
    import urllib.error
    import urllib.request

    url = s3.generate_presigned_url("get_object", Params={"Bucket": "own-client", "Key": "big.bin"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=10)
    assert err.value.code == 403


def test_a_handler_reaches_moto_and_lambda_with_its_injected_credentials(local_stack: LocalStack) -> None:
    lam = local_stack.client("lambda")
    local_stack.client("s3").create_bucket(Bucket="from-inside")
    create_function(lam, "inside-client", """
        import boto3
        def handler(event, context):
            boto3.client("s3").put_object(Bucket="from-inside", Key="k", Body=b"v")
            return [f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]]
    """, timeout=30)
    try:
        resp = lam.invoke(FunctionName="inside-client")
        assert "FunctionError" not in resp, resp["Payload"].read()
        assert "inside-client" in json.loads(resp["Payload"].read())
    finally:
        lam.delete_function(FunctionName="inside-client")
    assert local_stack.client("s3").get_object(Bucket="from-inside", Key="k")["Body"].read() == b"v"


def test_a_refused_body_is_never_taken_for_the_next_request(local_stack: LocalStack) -> None:
    """The body of a refused request (unread) must not be parsed as a request of its own."""
    import socket

    for url, path in ((local_stack.endpoints.moto, "/smuggle/k"), (local_stack.endpoints.lambda_, API)):
        host = url.split("//", 1)[1]
        inner = f"GET /_lambdarun/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        outer = (f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(inner)}\r\n\r\n").encode()
        hostname, port = host.split(":")
        with socket.create_connection((hostname, int(port)), timeout=15) as s:
            s.sendall(outer + inner)
            data = b""
            while True:  # until the server closes the connection (or the timeout fails the test)
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.count(b"HTTP/1.1 ") == 1, data
        assert data.startswith(b"HTTP/1.1 403"), data
