"""The invoker's Invoke client (lambdarun.lambda_http) against an endpoint that answers with
whatever bytes a test plans: forged, malformed, oversized answers end in the same typed
errors as boto3's path did, nothing is re-sent that may have run, throttles are retried."""

from __future__ import annotations

import base64
import json
import socket
import socketserver
import threading

import pytest

from lambdarun.errors import (
    FunctionNotFoundError,
    InvocationError,
    InvocationOutcomeUnknownError,
    PayloadTooLargeError,
    ThrottledError,
)
from lambdarun.lambda_http import MAX_RESPONSE_BYTES


def _answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever"]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


OK = _answer(200, b'{"ok": true}', {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": "req-1"})
THROTTLED = _answer(429, json.dumps({"message": "Rate exceeded", "Reason": "ConcurrentInvocationLimitExceeded"}).encode(),
                    {"x-amzn-ErrorType": "TooManyRequestsException"})


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                chunk = self.rfile.readline()
                if not chunk:
                    return
                head += chunk
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", "0")))
            with server.lock:
                server.requests.append((head.decode("latin-1").split("\r\n")[0], headers, body))
                action = server.plan.pop(0) if server.plan else OK
            if action == "close":
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            then_close = isinstance(action, tuple)  # ("close", bytes): written, then the connection closed
            data = action[1] if then_close else action
            self.wfile.write(data)
            self.wfile.flush()
            if then_close or b"Content-Length" not in data.split(b"\r\n\r\n")[0]:
                return  # a close-delimited answer


@pytest.fixture
def endpoint():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.requests, server.plan = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def invoker(lambdarun_session, endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTLEAN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    session = lambdarun_session(overrides={
        "target": "aws", "region": "eu-west-1",
        "aws": {"lambda_endpoint_url": f"http://127.0.0.1:{endpoint.server_address[1]}", "max_attempts": 2},
    })
    return session.invoker


def test_a_good_answer_and_the_request_boto3_would_send(invoker, endpoint):
    response = invoker.invoke("my:fn", b'{"x": 1}', log_tail=True, client_context={"custom": {"a": 1}})
    assert (response.status_code, response.payload) == (200, b'{"ok": true}')
    assert response.executed_version == "$LATEST" and response.request_id == "req-1"
    ((line, headers, body),) = endpoint.requests
    assert line == "POST /2015-03-31/functions/my%3Afn/invocations HTTP/1.1" and body == b'{"x": 1}'
    assert headers["x-amz-invocation-type"] == "RequestResponse" and headers["x-amz-log-type"] == "Tail"
    assert json.loads(base64.b64decode(headers["x-amz-client-context"])) == {"custom": {"a": 1}}
    # signed by botocore's SigV4 signer with the target's credentials, for lambda in the region
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTESTLEAN/")
    assert "/eu-west-1/lambda/aws4_request" in headers["authorization"] and "x-amz-date" in headers


def test_connections_are_kept_alive(invoker, endpoint):
    for _ in range(5):
        invoker.invoke("f", b"{}")
    assert len(endpoint.requests) == 5
    # one connection served them all: the server's handler saw them in one loop
    assert endpoint.requests[0][1]["host"] == endpoint.requests[-1][1]["host"]


def test_throttles_are_retried_with_backoff_then_a_throttled_error(invoker, endpoint):
    endpoint.plan = [THROTTLED]
    assert invoker.invoke("f", b"{}").status_code == 200 and len(endpoint.requests) == 2
    endpoint.requests.clear()
    endpoint.plan = [THROTTLED] * 5
    with pytest.raises(ThrottledError, match="concurrency limit"):
        invoker.invoke("f", b"{}")
    assert len(endpoint.requests) == 3  # the first request and max_attempts (2) retries


@pytest.mark.parametrize("answer, error, match", [
    (_answer(404, b'{"message": "Function not found: arn:x"}', {"x-amzn-ErrorType": "ResourceNotFoundException:http://internal.amazon.com/"}),
     FunctionNotFoundError, r"'f' not found .*ResourceNotFoundException.*Function not found"),
    (_answer(413, b'{"message": "too big"}'), PayloadTooLargeError, "too big"),
    (_answer(400, b'{"__type": "com.amazon#InvalidRequestContentException", "message": "bad"}'), InvocationError,
     r"\(InvalidRequestContentException\).*bad"),
    (_answer(400, b"\x00\xff not json"), InvocationError, r"\(400\)"),
    (_answer(500, b'{"message": "boom"}', {"x-amzn-ErrorType": "ServiceException"}), InvocationError, "ServiceException"),
])
def test_lambda_errors_are_typed_and_not_resent(invoker, endpoint, answer, error, match):
    endpoint.plan = [answer]
    with pytest.raises(error, match=match) as info:
        invoker.invoke("f", b"{}")
    assert not isinstance(info.value, ThrottledError)
    assert len(endpoint.requests) == 1


@pytest.mark.parametrize("answer", [
    "close",  # the connection dropped after the request was sent
    ("close", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"),  # cut off mid-body
    b"SMTP ready\r\n\r\n",  # not HTTP at all
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n{}",  # a forged length: not even read
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
])
def test_lost_forged_or_malformed_answers_are_outcome_unknown_and_never_resent(invoker, endpoint, answer):
    endpoint.plan = [answer]
    with pytest.raises(InvocationOutcomeUnknownError, match="may have run"):
        invoker.invoke("f", b"{}")
    assert len(endpoint.requests) == 1
    assert invoker.invoke("f", b"{}").status_code == 200  # the pool recovers


def test_an_answer_over_lambdas_response_limit_is_refused(invoker, endpoint):
    endpoint.plan = [_answer(200, b"x" * (MAX_RESPONSE_BYTES + 10), length=False)]  # close-delimited
    with pytest.raises(InvocationOutcomeUnknownError, match="response limit"):
        invoker.invoke("f", b"{}")
    assert len(endpoint.requests) == 1


def test_a_malformed_log_tail_or_function_error_header_is_not_a_crash(invoker, endpoint):
    endpoint.plan = [_answer(200, b'{"errorMessage": "x"}', {"X-Amz-Log-Result": "%%%not base64",
                                                            "X-Amz-Function-Error": "Unhandled"})]
    response = invoker.invoke("f", b"{}", log_tail=True)
    assert response.log_tail is None and response.function_error == "Unhandled"


def test_an_endpoint_that_refuses_connections_is_an_invocation_error_after_retries(lambdarun_session, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = lambdarun_session(overrides={
        "target": "aws", "aws": {"lambda_endpoint_url": f"http://127.0.0.1:{port}", "max_attempts": 1}})
    with pytest.raises(InvocationError, match="could not connect .* after 2 attempts") as info:
        session.invoker.invoke("f", b"{}")
    assert not isinstance(info.value, InvocationOutcomeUnknownError)


def test_new_credentials_are_signed_with_at_once(invoker, endpoint, monkeypatch):
    from botocore.credentials import Credentials

    target = invoker.target
    invoker.invoke("f", b"{}")
    monkeypatch.setattr(target, "credentials", lambda: Credentials("AKIDROTATED", "other-secret"))
    invoker.invoke("f", b"{}")
    keys = [headers["authorization"].split("Credential=")[1].split("/")[0] for _, headers, _ in endpoint.requests]
    assert keys == ["AKIDTESTLEAN", "AKIDROTATED"]


def test_before_sign_sets_headers_that_are_signed_and_its_undo_stops_it(invoker, endpoint):
    def name_the_service(headers):
        headers["Host"] = "service.example:443"

    undo = invoker.before_sign(name_the_service)
    invoker.invoke("f", b"{}")
    undo()
    invoker.invoke("f", b"{}")
    (_, first, _), (_, second, _) = endpoint.requests
    assert first["host"] == "service.example:443" and "host" in first["authorization"].split("SignedHeaders=")[1]
    assert second["host"] == f"127.0.0.1:{endpoint.server_address[1]}"


def test_the_environments_proxy_is_used_as_botocore_would(lambdarun_session, endpoint, monkeypatch):
    """HTTP_PROXY names the proxy for a plain-HTTP endpoint: the request goes to the proxy in
    absolute form (here the test's endpoint plays the proxy, for a host that doesn't resolve)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTLEAN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{endpoint.server_address[1]}")
    session = lambdarun_session(overrides={
        "target": "aws", "region": "eu-west-1",
        "aws": {"lambda_endpoint_url": "http://lambda.proxied.invalid:8080", "max_attempts": 1},
    })
    assert session.invoker.invoke("f", b"{}").payload == b'{"ok": true}'
    ((line, headers, _body),) = endpoint.requests
    assert line == "POST http://lambda.proxied.invalid:8080/2015-03-31/functions/f/invocations HTTP/1.1"
    assert headers["host"] == "lambda.proxied.invalid:8080"


def test_no_proxy_exempts_the_endpoint(lambdarun_session, endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTLEAN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    session = lambdarun_session(overrides={
        "target": "aws", "region": "eu-west-1",
        "aws": {"lambda_endpoint_url": f"http://127.0.0.1:{endpoint.server_address[1]}", "max_attempts": 1},
    })
    assert session.invoker.invoke("f", b"{}").status_code == 200
    ((line, _headers, _body),) = endpoint.requests
    assert line == "POST /2015-03-31/functions/f/invocations HTTP/1.1"
