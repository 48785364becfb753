"""The invoker's Invoke client (lambdarun.lambda_http) against an endpoint that answers with
whatever bytes a test plans: forged, malformed, oversized answers end in the same typed
errors as boto3's path did, nothing is re-sent that may have run, throttles are retried.

Its event-loop transport (lambdarun.http_loop): invocations in flight hold no thread,
HTTPS is verified against botocore's CA bundle (also through a CONNECT tunnel), kept
connections never carry one answer into the next request, and closing the invoker ends its
thread and whatever was still in flight."""

from __future__ import annotations

import base64
import datetime
import json
import socket
import socketserver
import ssl
import threading
import time

import pytest

from lambdarun.errors import (
    FunctionNotFoundError,
    InvocationError,
    InvocationOutcomeUnknownError,
    PayloadTooLargeError,
    ThrottledError,
)
from lambdarun.lambda_http import MAX_RESPONSE_BYTES
from lambdarun.testing.latency import LatencyLambda


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


def _server(handler=_Handler, tls: ssl.SSLContext | None = None):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.requests, server.plan = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def endpoint():
    server, thread = _server()
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


# -- the event-loop transport ----------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTLOOP")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _session(lambdarun_session, url: str, **aws):
    return lambdarun_session(overrides={
        "target": "aws", "region": "eu-west-1", "aws": {"lambda_endpoint_url": url, "max_attempts": 1, **aws}})


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lambdarun-invoke")]


def test_a_thousand_invocations_in_flight_hold_no_thread_each(lambdarun_session, aws_env):
    with LatencyLambda(duration=1.0, concurrency=1000, function_name="f") as latency:
        creds = latency.boto3_credentials()
        aws_env.setenv("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"])
        aws_env.setenv("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"])
        invoker = _session(lambdarun_session, latency.url).invoker
        before = threading.active_count()
        handles = [invoker.invoke_async("f", b'{"n": %d}' % i) for i in range(1000)]
        in_flight_threads = threading.active_count() - before
        answers = [h.future.result(60) for h in handles]
        stats = latency.stats()
    assert [a.payload for a in answers] == [b'{"n": %d}' % i for i in range(1000)]  # echoed, in order
    assert stats["max_in_flight"] >= 900 and stats["throttled"] == 0
    # one loop thread (and asyncio's small executor for signing retries), not one per call
    assert in_flight_threads <= 8, in_flight_threads


def test_invoke_from_a_done_callback_refuses_instead_of_deadlocking(lambdarun_session, aws_env, endpoint):
    invoker = _session(lambdarun_session, f"http://127.0.0.1:{endpoint.server_address[1]}").invoker
    seen: list[BaseException] = []
    done = threading.Event()

    def callback(_future):
        try:
            invoker.invoke("f", b"{}")
        except RuntimeError as exc:
            seen.append(exc)
        done.set()

    invoker.invoke_async("f", b"{}").future.add_done_callback(callback)
    assert done.wait(10)
    assert "would block the invoker's own event loop" in str(seen[0])
    assert invoker.invoke("f", b"{}").status_code == 200  # the loop is still serving


def test_chunked_and_close_delimited_answers_are_read_and_closed_connections_not_reused(
        lambdarun_session, aws_env, endpoint):
    endpoint.plan = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n4\r\n: 1}\r\n0\r\n\r\n",
        _answer(200, b'{"closing": 1}', {"Connection": "close"}),
        _answer(200, b'{"no length": 1}', length=False),  # ends when the server closes
        OK,
    ]
    invoker = _session(lambdarun_session, f"http://127.0.0.1:{endpoint.server_address[1]}").invoker
    assert invoker.invoke("f", b"{}").payload == b'{"a": 1}'
    assert invoker.invoke("f", b"{}").payload == b'{"closing": 1}'
    assert invoker.invoke("f", b"{}").payload == b'{"no length": 1}'
    assert invoker.invoke("f", b"{}").payload == b'{"ok": true}'
    # the server ends a connection after a body without Content-Length (the chunked and the
    # close-delimited ones) and after "Connection: close": none of them is reused
    assert invoker._http.connections_opened == 4
    assert [len(endpoint.requests)] == [4]


class _ChattyHandler(_Handler):
    """Answers, then (while the connection is idle) sends a forged second answer."""

    def handle(self) -> None:
        self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        self.rfile.read(2)
        with self.server.lock:
            self.server.requests.append("chatty")
        self.wfile.write(_answer(200, b'{"first": 1}'))
        self.wfile.flush()
        time.sleep(0.2)
        self.wfile.write(_answer(200, b'{"forged": "for the next request"}'))
        self.wfile.flush()
        time.sleep(5)


def test_bytes_on_an_idle_connection_are_never_read_as_the_next_answer(lambdarun_session, aws_env):
    server, thread = _server(_ChattyHandler)
    try:
        invoker = _session(lambdarun_session, f"http://127.0.0.1:{server.server_address[1]}").invoker
        assert invoker.invoke("f", b"{}").payload == b'{"first": 1}'
        deadline = time.monotonic() + 10
        while invoker._http.connections_opened == 1 and time.monotonic() < deadline:
            # the forged bytes arrive while idle; the next request must get its own answer
            time.sleep(0.3)
            assert invoker.invoke("f", b"{}").payload == b'{"first": 1}'
        assert invoker._http.connections_opened >= 2
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_read_timeout_is_outcome_unknown(aws_env):
    from lambdarun.config import Settings  # noqa: F401 - the target needs nothing else
    from lambdarun.lambda_http import LambdaHttp

    class Silent(_Handler):
        def handle(self) -> None:
            self.rfile.readline()
            time.sleep(3)

    server, thread = _server(Silent)

    class Target:
        name, region = "t", "eu-west-1"

        def endpoint_url(self, service):
            return f"http://127.0.0.1:{server.server_address[1]}"

        def credentials(self):
            from botocore.credentials import Credentials
            return Credentials("AKIDTESTLOOP", "testing")

    http = LambdaHttp(Target(), max_attempts=1, read_timeout=0.5)
    try:
        with pytest.raises(InvocationOutcomeUnknownError, match="no answer within 0.5 s.*may have run"):
            http.invoke("f", b"{}", {"X-Amz-Invocation-Type": "RequestResponse"})
    finally:
        http.close()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_closing_the_session_ends_the_loop_thread_and_what_was_in_flight(lambdarun_session, aws_env):
    class Slow(_Handler):
        def handle(self) -> None:
            self.rfile.readline()
            time.sleep(30)

    server, thread = _server(Slow)
    try:
        before = set(_loop_threads())
        session = _session(lambdarun_session, f"http://127.0.0.1:{server.server_address[1]}")
        handle = session.invoker.invoke_async("f", b"{}")
        waiter: list[BaseException] = []

        def blocked():
            try:
                session.invoker.invoke("f", b"{}")
            except BaseException as exc:  # noqa: BLE001
                waiter.append(exc)

        caller = threading.Thread(target=blocked)
        caller.start()
        time.sleep(0.3)
        assert len(set(_loop_threads()) - before) == 1
        session.close()
        caller.join(10)
        assert handle.future.cancelled()
        assert isinstance(waiter[0], InvocationOutcomeUnknownError) and "may have run" in str(waiter[0])
        assert set(_loop_threads()) - before == set()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- HTTPS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA and a certificate it signed for 127.0.0.1 / localhost (files: ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lambdarun test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder


@pytest.fixture
def tls_endpoint(certificates):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "cert.pem", certificates / "key.pem")
    server, thread = _server(tls=context)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_https_is_verified_against_the_ca_bundle_botocore_uses(lambdarun_session, aws_env, tls_endpoint, certificates):
    url = f"https://localhost:{tls_endpoint.server_address[1]}"
    aws_env.setenv("AWS_CA_BUNDLE", str(certificates / "ca.pem"))
    assert _session(lambdarun_session, url).invoker.invoke("f", b"{}").payload == b'{"ok": true}'
    ((line, headers, _),) = tls_endpoint.requests
    assert line.startswith("POST /2015-03-31/functions/f/invocations") and headers["host"] == url[8:]


def test_an_https_endpoint_with_an_untrusted_certificate_gets_nothing(lambdarun_session, aws_env, tls_endpoint):
    url = f"https://localhost:{tls_endpoint.server_address[1]}"  # certifi's bundle: our test CA is not in it
    with pytest.raises(InvocationError, match="could not connect.*CERTIFICATE_VERIFY_FAILED") as info:
        _session(lambdarun_session, url).invoker.invoke("f", b'{"secret": 1}')
    assert not isinstance(info.value, InvocationOutcomeUnknownError)
    assert tls_endpoint.requests == []  # not a byte of the request was sent


class _ConnectProxy(socketserver.BaseRequestHandler):
    """A CONNECT-only proxy that records each tunnel's request and pipes the bytes."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        with self.server.lock:
            self.server.requests.append(lines)
        method, authority, _ = lines[0].split(" ")
        if method != "CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host, port = authority.rsplit(":", 1)
        upstream = socket.create_connection(("127.0.0.1", int(port)))
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(a, b):
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        other = threading.Thread(target=pipe, args=(upstream, self.request), daemon=True)
        other.start()
        pipe(self.request, upstream)
        other.join(5)
        upstream.close()


def test_https_through_a_proxy_is_a_verified_connect_tunnel(lambdarun_session, aws_env, tls_endpoint, certificates):
    proxy, thread = _server(_ConnectProxy)
    try:
        aws_env.setenv("AWS_CA_BUNDLE", str(certificates / "ca.pem"))
        aws_env.setenv("HTTPS_PROXY", f"http://user:p%40ss@127.0.0.1:{proxy.server_address[1]}")
        url = f"https://localhost:{tls_endpoint.server_address[1]}"
        invoker = _session(lambdarun_session, url).invoker
        assert invoker.invoke("f", b'{"a": 1}').payload == b'{"ok": true}'
        assert invoker.invoke("f", b'{"a": 2}').payload == b'{"ok": true}'
        (tunnel,) = proxy.requests  # one tunnel, kept alive; the proxy saw no request inside it
        assert tunnel[0] == f"CONNECT localhost:{tls_endpoint.server_address[1]} HTTP/1.1"
        assert "Proxy-Authorization: Basic dXNlcjpwQHNz" in tunnel  # user:p@ss, as botocore sends it
        assert [body for _, _, body in tls_endpoint.requests] == [b'{"a": 1}', b'{"a": 2}']
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)
