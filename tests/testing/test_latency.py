"""lambdarun.testing.LatencyLambda: the latency-modelled Lambda endpoint (its own process).

It answers Invoke after its duration with the configured payload, keeps Lambda's
concurrency rule (429 TooManyRequestsException with a Reason), and refuses what is not
signed with its own credentials, malformed or oversized before anything is answered or a
responder runs (the marker responder would create a file)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from lambdarun.testing import wait_for
from lambdarun.testing.latency import MAX_BODY, LatencyConfig, LatencyLambda

ROOT = Path(__file__).resolve().parents[2]
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=60)


def client(endpoint: LatencyLambda, **credentials: str):
    return boto3.client("lambda", endpoint_url=endpoint.url, region_name="us-east-1", config=NO_RETRY,
                        **(credentials or endpoint.boto3_credentials()))


@pytest.fixture
def marker_endpoint() -> Iterator[LatencyLambda]:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    with LatencyLambda(duration=0.0, concurrency=10, responder="latency_responders.marker:respond",
                       function_name="fn", env=env) as endpoint:
        yield endpoint


def test_echo_fixed_payload_and_get_function() -> None:
    with LatencyLambda(duration=0.0, concurrency=5) as echo, \
            LatencyLambda(duration=0.0, concurrency=5, payload=b'{"fixed": true}') as fixed:
        answer = client(echo).invoke(FunctionName="any", Payload=b'{"x": [1, 2]}')
        assert answer["StatusCode"] == 200 and json.loads(answer["Payload"].read()) == {"x": [1, 2]}
        answer = client(fixed).invoke(FunctionName="any", Payload=b'{"x": 1}')
        assert json.loads(answer["Payload"].read()) == {"fixed": True}
        config = client(echo).get_function(FunctionName="any")["Configuration"]
        assert config["State"] == "Active" and config["FunctionName"] == "any"
        assert client(echo).invoke(FunctionName="any", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
        stats = echo.stats()
        assert (stats["invocations"], stats["events"], stats["throttled"], stats["refused"]) == (1, 1, 0, 0)
        assert echo.reset()["invocations"] == 1 and echo.stats()["invocations"] == 0


def test_concurrency_limit_answers_lambdas_429_with_a_reason() -> None:
    with LatencyLambda(duration=30.0, concurrency=2, reason="ReservedFunctionConcurrentInvocationLimitExceeded") as ep:
        lam = client(ep)
        errors: list[Exception] = []

        def hold() -> None:  # cut when the endpoint closes at the end of the test
            try:
                lam.invoke(FunctionName="f")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=hold, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: ep.stats()["in_flight"] == 2)
        with pytest.raises(lam.exceptions.TooManyRequestsException) as caught:
            lam.invoke(FunctionName="f", Payload=b"{}")
        err = caught.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert err["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded" and err["Type"] == "User"
        stats = ep.stats()
        assert stats["throttled"] == 1 and stats["max_in_flight"] == 2 and stats["invocations"] == 0


def test_many_in_flight_on_one_loop() -> None:
    """200 invocations held at once by one endpoint process (no thread per request)."""
    with LatencyLambda(duration=30.0, concurrency=1000) as ep:
        socks = []
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        creds = ep.boto3_credentials()
        signer = SigV4Auth(Credentials(creds["aws_access_key_id"], creds["aws_secret_access_key"]), "lambda",
                           "us-east-1")
        for _ in range(200):
            req = AWSRequest("POST", f"{ep.url}/2015-03-31/functions/f/invocations", data=b"{}",
                             headers={"Host": f"127.0.0.1:{ep.port}"})
            signer.add_auth(req)
            raw = (f"POST /2015-03-31/functions/f/invocations HTTP/1.1\r\n"
                   + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
                   + "Content-Length: 2\r\n\r\n{}").encode()
            s = socket.create_connection(("127.0.0.1", ep.port))
            s.sendall(raw)
            socks.append(s)
        wait_for(lambda: ep.stats()["in_flight"] == 200)
        stats = ep.stats()
        assert stats["max_in_flight"] == 200 and stats["connections"] == 200
        for s in socks:
            s.close()


def test_a_request_that_is_answered_runs_the_responder(marker_endpoint: LatencyLambda, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    answer = client(marker_endpoint).invoke(FunctionName="fn", Payload=json.dumps({"marker": str(marker)}))
    assert json.loads(answer["Payload"].read()) == {"responded": "ran"}
    assert marker.read_text() == "ran\n"


@pytest.mark.parametrize("credentials", [
    {"aws_access_key_id": "AKIAFORGED0000000000", "aws_secret_access_key": "x" * 40},
    "right key id, wrong secret",
])
def test_forged_credentials_are_refused_and_nothing_runs(marker_endpoint: LatencyLambda, tmp_path: Path,
                                                          credentials) -> None:
    if credentials == "right key id, wrong secret":
        credentials = {**marker_endpoint.boto3_credentials(), "aws_secret_access_key": "y" * 40}
    marker = tmp_path / "ran"
    lam = client(marker_endpoint, **credentials)
    with pytest.raises(lam.exceptions.ClientError) as caught:
        lam.invoke(FunctionName="fn", Payload=json.dumps({"marker": str(marker)}))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert caught.value.response["Error"]["Code"] in ("UnrecognizedClientException", "InvalidSignatureException")
    assert not marker.exists()
    stats = marker_endpoint.stats()
    assert stats["invocations"] == 0 and stats["refused"] == 1


def _raw(endpoint: LatencyLambda, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _signed_head(endpoint: LatencyLambda, body: bytes, *, declared: int | None = None, path: str = "fn") -> bytes:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = endpoint.boto3_credentials()
    signer = SigV4Auth(Credentials(creds["aws_access_key_id"], creds["aws_secret_access_key"]), "lambda", "us-east-1")
    req = AWSRequest("POST", f"{endpoint.url}/2015-03-31/functions/{path}/invocations", data=body,
                     headers={"Host": f"127.0.0.1:{endpoint.port}"})
    signer.add_auth(req)
    length = len(body) if declared is None else declared
    return (f"POST /2015-03-31/functions/{path}/invocations HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
            + f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def test_replayed_request_with_a_tampered_body_is_refused(marker_endpoint: LatencyLambda, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    signed = json.dumps({"marker": str(tmp_path / "other")}).encode()
    tampered = json.dumps({"marker": str(marker)}).encode()
    head = _signed_head(marker_endpoint, signed, declared=len(tampered))
    answer = _raw(marker_endpoint, head + tampered)
    assert answer.startswith(b"HTTP/1.1 403 ") and b"InvalidSignatureException" in answer
    assert not marker.exists() and marker_endpoint.stats()["invocations"] == 0


def test_oversized_body_is_refused_before_it_is_read(marker_endpoint: LatencyLambda, tmp_path: Path) -> None:
    head = _signed_head(marker_endpoint, b"{}", declared=MAX_BODY + 1)
    answer = _raw(marker_endpoint, head)  # the body is never sent: the answer comes anyway
    assert answer.startswith(b"HTTP/1.1 413 ") and b"RequestTooLargeException" in answer
    assert marker_endpoint.stats()["invocations"] == 0


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"POST /2015-03-31/functions/fn/invocations HTTP/1.1\r\nno colon here\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /x HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    b"POST /2015-03-31/functions/fn/invocations HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",  # unsigned
])
def test_malformed_or_unsigned_requests_are_refused(marker_endpoint: LatencyLambda, data: bytes) -> None:
    answer = _raw(marker_endpoint, data)
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 403, 411, 431), answer[:200]
    stats = marker_endpoint.stats()
    assert stats["invocations"] == 0 and stats["refused"] == 1


def test_unknown_function_is_resource_not_found(marker_endpoint: LatencyLambda, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    lam = client(marker_endpoint)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="other", Payload=json.dumps({"marker": str(marker)}))
    assert not marker.exists()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        LatencyConfig(concurrency=0)
    with pytest.raises(ValueError, match="duration"):
        LatencyConfig(duration=-1)


def test_the_process_exits_when_closed() -> None:
    ep = LatencyLambda(duration=0.0)
    pid = ep.pid
    ep.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_responder_that_raises_is_lambdas_unhandled_function_error() -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    with LatencyLambda(duration=0.0, responder="latency_responders.marker:fail", env=env) as ep:
        answer = client(ep).invoke(FunctionName="f", Payload=b"{}")
        assert answer["StatusCode"] == 200 and answer["FunctionError"] == "Unhandled"
        body = json.loads(answer["Payload"].read())
        assert body["errorType"] == "ValueError" and "refused this payload" in body["errorMessage"]
        assert ep.stats()["function_errors"] == 1
