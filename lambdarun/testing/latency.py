"""A latency-modelled Lambda endpoint for measuring callers: :class:`LatencyLambda`.

It speaks the Lambda API's ``Invoke`` (and ``GetFunction``) on 127.0.0.1, answers every
synchronous invocation after a configured ``duration`` without running any code, and keeps
Lambda's concurrency rule: more than ``concurrency`` invocations in flight are refused with
``429 TooManyRequestsException`` and a ``Reason``, as AWS does. It runs in its own process
(one asyncio loop, uvloop when installed: no thread per request), so a caller measured
against it does not share its interpreter or its GIL::

    with LatencyLambda(duration=1.0, concurrency=1000) as endpoint:
        client = boto3.client("lambda", endpoint_url=endpoint.url, region_name="us-east-1",
                              **endpoint.boto3_credentials())
        client.invoke(FunctionName="anything", Payload=b"{}")    # returns after 1 s
        endpoint.stats()  # {"invocations": 1, "max_in_flight": 1, "throttled": 0, ...}

What an invocation returns: ``payload`` (fixed bytes), else the request's own payload
(echo), else what ``responder`` computes from the request payload: ``"module:function"``,
a callable ``bytes -> bytes`` imported inside the endpoint's process (e.g. one that answers
lambdarun's call events with signed outcomes; see ``benchmarks/_latency_responder.py``).

Every request must be SigV4-signed with the endpoint's own credentials
(:meth:`LatencyLambda.boto3_credentials`, generated per endpoint); anything else is refused
with Lambda's 403 before its body is read. ``Event`` invocations are accepted (202) and
counted, not run. Statistics come over the control pipe (:meth:`LatencyLambda.stats`), not
over HTTP.

Not modelled: Lambda's scaling rate (1,000 new environments per 10 s per function: every
slot here is warm from the start), cold starts, the Invoke request-rate quota, network
latency between caller and Region (put a :class:`~lambdarun.testing.FaultProxy` in front for
that), payload size limits other than the 6 MB request body.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import attrs

__all__ = ["LatencyLambda", "LatencyConfig", "LatencyLambdaError"]

#: Lambda's synchronous request payload limit (6 MB), plus room for the HTTP request itself
MAX_BODY = 6 * 1024 * 1024
MAX_HEADER = 64 * 1024
_INVOKE_PREFIX = "/2015-03-31/functions/"
_ACCOUNT = "123456789012"


class LatencyLambdaError(RuntimeError):
    """The endpoint's process did not start or stopped answering."""


@attrs.frozen
class LatencyConfig:
    """What the endpoint does (sent to its process as JSON).

    ``duration``: seconds each synchronous invocation takes; ``concurrency``: invocations in
    flight before Lambda's 429 (``reason``: the ``Reason`` it gives, one of botocore's
    ``ThrottleReason`` values); ``function_name``: the one function it serves (None: any
    name); ``payload``: a fixed response (None: echo, unless ``responder``); ``responder``:
    ``"module:function"``; ``region``: for ARNs.
    """

    duration: float = 1.0
    concurrency: int = 1000
    reason: str = "ConcurrentInvocationLimitExceeded"
    function_name: str | None = None
    payload: str | None = None
    responder: str | None = None
    region: str = "us-east-1"

    def __attrs_post_init__(self) -> None:
        if self.duration < 0:
            raise ValueError(f"duration must be >= 0 seconds, got {self.duration!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency!r}")


class LatencyLambda:
    """Start the endpoint process; ``url``, ``stats()``, ``reset()``, ``close()``.

    Keyword arguments are :class:`LatencyConfig`'s; ``env`` adds environment variables for
    the endpoint's process (e.g. ``PYTHONPATH`` for a responder module, a signing key)."""

    def __init__(self, *, env: dict[str, str] | None = None, start_timeout: float = 60.0, **config: Any) -> None:
        payload = config.get("payload")
        if isinstance(payload, bytes):
            config["payload"] = payload.decode("utf-8")
        self.config = LatencyConfig(**config)
        self.access_key_id = "LRLT" + secrets.token_hex(8).upper()
        self._secret = secrets.token_urlsafe(30)[:40]
        self._lock = threading.Lock()
        child_env = {**os.environ, **(env or {})}
        self._proc = subprocess.Popen(
            # not ``-m lambdarun.testing.latency``: the package imports this module first
            [sys.executable, "-c", "from lambdarun.testing.latency import main; main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env, text=True, bufsize=1,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({
            "config": attrs.asdict(self.config),
            "access_key_id": self.access_key_id,
            "secret_access_key": self._secret,
        }) + "\n")
        self._proc.stdin.flush()
        hello = self._read_line(start_timeout)
        self.port: int = int(hello["port"])
        self.pid: int = self._proc.pid

    def _read_line(self, timeout: float) -> dict[str, Any]:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not out or not out[0]:
            self.close()
            raise LatencyLambdaError(
                f"the latency endpoint's process did not answer within {timeout:g} s "
                f"(exit code {self._proc.poll()}); see its stderr above"
            )
        return json.loads(out[0])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def boto3_credentials(self) -> dict[str, str]:
        """``aws_access_key_id`` / ``aws_secret_access_key`` this endpoint accepts."""
        return {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self._secret}

    def environment(self) -> dict[str, str]:
        """``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` for a process that calls it."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self._secret}

    def _command(self, name: str) -> dict[str, Any]:
        with self._lock:
            if self._proc.poll() is not None:
                raise LatencyLambdaError(f"the latency endpoint exited with code {self._proc.returncode}")
            assert self._proc.stdin is not None
            self._proc.stdin.write(name + "\n")
            self._proc.stdin.flush()
            return self._read_line(30)

    def stats(self) -> dict[str, Any]:
        """Counters since the start (or the last :meth:`reset`): ``invocations`` (answered
        synchronously), ``events`` (accepted), ``throttled`` (429s), ``refused`` (403/4xx),
        ``function_errors`` (the responder raised: answered as Lambda's ``Unhandled``),
        ``in_flight`` / ``max_in_flight``, ``connections`` (opened) / ``max_connections``
        (open at once), ``first_s`` / ``last_s`` (seconds since the reset of the first
        request and of the last answer), ``per_second`` (answers completed in each second),
        ``cpu_s`` (the endpoint process's own CPU time: whether it, not the caller, was the limit)."""
        return self._command("stats")

    def reset(self) -> dict[str, Any]:
        """Zero the counters (the in-flight count stays); returns the stats before."""
        return self._command("reset")

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()  # the endpoint exits when its control pipe closes
            except OSError:
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        for stream in (self._proc.stdout, self._proc.stdin):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def __enter__(self) -> LatencyLambda:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# the endpoint's process
# ---------------------------------------------------------------------------------------

_REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 411: "Length Required", 413: "Request Entity Too Large",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class _Stats:
    def __init__(self) -> None:
        self.in_flight = 0
        self.open_connections = 0
        self.reset()

    def reset(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()
        self.invocations = self.events = self.throttled = self.refused = self.function_errors = 0
        self.max_in_flight = self.in_flight
        self.connections = 0
        self.max_connections = self.open_connections
        self.first: float | None = None
        self.last: float | None = None
        self.per_second: dict[int, int] = {}

    def as_dict(self) -> dict[str, Any]:
        seconds = range(max(self.per_second) + 1) if self.per_second else range(0)
        return {
            "invocations": self.invocations, "events": self.events, "throttled": self.throttled,
            "refused": self.refused, "function_errors": self.function_errors,
            "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
            "connections": self.connections, "max_connections": self.max_connections,
            "first_s": None if self.first is None else round(self.first - self.t0, 4),
            "last_s": None if self.last is None else round(self.last - self.t0, 4),
            "per_second": [self.per_second.get(s, 0) for s in seconds],
            "cpu_s": round(time.process_time() - self.cpu0, 3),
        }


class _Endpoint:
    def __init__(self, config: LatencyConfig, access_key_id: str, secret: str) -> None:
        from lambdarun.local.credentials import StackCredentials
        from lambdarun.local.sigv4 import SigV4Verifier

        self.config = config
        self.verifier = SigV4Verifier(StackCredentials(access_key_id, secret))
        self.stats = _Stats()
        self.responder: Callable[[bytes], bytes] | None = None
        if config.responder:
            module, _, attr = config.responder.partition(":")
            self.responder = getattr(importlib.import_module(module), attr or "respond")
        self.fixed = None if config.payload is None else config.payload.encode("utf-8")

    # -- HTTP ------------------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = self.stats
        stats.connections += 1
        stats.open_connections += 1
        stats.max_connections = max(stats.max_connections, stats.open_connections)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                except asyncio.LimitOverrunError:
                    self._refuse(writer, 431, "RequestTooLargeException", "Request headers too large.")
                    return
                keep = await self._request(head, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # the client went away, or the endpoint is stopping
        finally:
            stats.open_connections -= 1
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already gone
                pass

    def _write(self, writer: asyncio.StreamWriter, status: int, body: bytes, *, headers: dict[str, str] | None = None,
               close: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                 f"Content-Length: {len(body)}", "Content-Type: application/json",
                 f"x-amzn-RequestId: {uuid.uuid4()}"]
        if close:
            lines.append("Connection: close")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _refuse(self, writer: asyncio.StreamWriter, status: int, kind: str, message: str) -> bool:
        self.stats.refused += 1
        self._write(writer, status, _error(kind, message), headers={"x-amzn-ErrorType": kind}, close=True)
        return False

    async def _request(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            text = head.decode("latin-1")
            request_line, *header_lines = text[:-4].split("\r\n")
            method, target, version = request_line.split(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            headers: list[tuple[str, str]] = []
            for line in header_lines:
                name, sep, value = line.partition(":")
                if not sep or not name or name != name.strip():
                    raise ValueError(line)
                headers.append((name, value.strip()))
        except ValueError:
            return self._refuse(writer, 400, "InvalidRequestContentException", "Malformed HTTP request.")
        get = {k.lower(): v for k, v in headers}.get
        if get("transfer-encoding") is not None:
            return self._refuse(writer, 411, "InvalidRequestContentException", "Send a Content-Length.")
        try:
            length = int(get("content-length") or "0")
            if length < 0:
                raise ValueError(length)
        except ValueError:
            return self._refuse(writer, 400, "InvalidRequestContentException", "Malformed Content-Length.")
        try:
            auth = self.verifier.authorization(get("authorization"), target.partition("?")[2])
        except Exception as exc:  # noqa: BLE001 - AuthFailure: refused before the body is read
            return self._refuse(writer, 403, "UnrecognizedClientException", str(exc))
        if length > MAX_BODY:
            return self._refuse(writer, 413, "RequestTooLargeException",
                                f"Request must be smaller than {MAX_BODY} bytes for the InvokeFunction operation")
        body = await reader.readexactly(length) if length else b""
        try:
            self.verifier.verify(auth, method, target, headers, body)
        except Exception as exc:  # noqa: BLE001 - AuthFailure
            kind = "InvalidSignatureException" if getattr(exc, "kind", "") == "signature" else "UnrecognizedClientException"
            return self._refuse(writer, 403, kind, str(exc))
        keep = (get("connection") or "").lower() != "close"
        path = unquote(target.partition("?")[0])
        if not path.startswith(_INVOKE_PREFIX):
            self._write(writer, 404, _error("UnknownOperationException", "Unknown operation."),
                        headers={"x-amzn-ErrorType": "UnknownOperationException"})
            return keep
        rest = path[len(_INVOKE_PREFIX):]
        name, _, tail = rest.partition("/")
        name = name.rsplit(":", 1)[-1] if name.startswith("arn:") else name
        if self.config.function_name is not None and name != self.config.function_name:
            arn = f"arn:aws:lambda:{self.config.region}:{_ACCOUNT}:function:{name}"
            self._write(writer, 404, _error("ResourceNotFoundException", f"Function not found: {arn}"),
                        headers={"x-amzn-ErrorType": "ResourceNotFoundException"})
            return keep
        if method == "GET" and tail == "":
            self._write(writer, 200, json.dumps(self._function(name)).encode())
            return keep
        if method != "POST" or tail != "invocations":
            self._write(writer, 404, _error("UnknownOperationException", "Unknown operation."),
                        headers={"x-amzn-ErrorType": "UnknownOperationException"})
            return keep
        await self._invoke(writer, body, get("x-amz-invocation-type") or "RequestResponse")
        return keep

    def _function(self, name: str) -> dict[str, Any]:
        arn = f"arn:aws:lambda:{self.config.region}:{_ACCOUNT}:function:{name}"
        return {"Configuration": {"FunctionName": name, "FunctionArn": arn, "Runtime": "python3.11",
                                  "Handler": "latency.model", "State": "Active", "Version": "$LATEST",
                                  "Timeout": 900, "MemorySize": 128, "LastUpdateStatus": "Successful"},
                "Code": {"RepositoryType": "S3", "Location": ""}}

    async def _invoke(self, writer: asyncio.StreamWriter, body: bytes, kind: str) -> None:
        stats = self.stats
        now = time.monotonic()
        if stats.first is None:
            stats.first = now
        if kind == "DryRun":
            self._write(writer, 204, b"")
            return
        if kind == "Event":
            stats.events += 1
            self._write(writer, 202, b"")
            return
        if kind != "RequestResponse":
            self._write(writer, 400, _error("InvalidParameterValueException",
                                            f"Invalid invocation type: {kind!r}"),
                        headers={"x-amzn-ErrorType": "InvalidParameterValueException"})
            return
        if stats.in_flight >= self.config.concurrency:
            stats.throttled += 1
            payload = json.dumps({"Reason": self.config.reason, "Type": "User", "message": "Rate Exceeded."})
            self._write(writer, 429, payload.encode(), headers={"x-amzn-ErrorType": "TooManyRequestsException"})
            return
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        try:
            if self.fixed is not None:
                answer = self.fixed
            elif self.responder is not None:
                try:
                    answer = self.responder(body)
                except Exception as exc:  # noqa: BLE001 - Lambda's answer to a handler that raised
                    stats.function_errors += 1
                    headers["X-Amz-Function-Error"] = "Unhandled"
                    answer = json.dumps({"errorMessage": str(exc)[:1000], "errorType": type(exc).__name__,
                                         "stackTrace": []}).encode()
            else:
                answer = body
            await asyncio.sleep(self.config.duration)
        finally:
            stats.in_flight -= 1
        done = time.monotonic()
        stats.last = done
        stats.invocations += 1
        second = int(done - stats.t0)
        stats.per_second[second] = stats.per_second.get(second, 0) + 1
        self._write(writer, 200, answer, headers=headers)


def _error(kind: str, message: str) -> bytes:
    return json.dumps({"Type": "User", "message": message, "__type": kind}).encode()


async def _control(endpoint: _Endpoint, server: asyncio.base_events.Server) -> None:
    """Commands on stdin (``stats``, ``reset``); EOF stops the endpoint."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            server.close()
            return
        command = line.strip()
        if command == "stats":
            answer = endpoint.stats.as_dict()
        elif command == "reset":
            answer = endpoint.stats.as_dict()
            endpoint.stats.reset()
        else:
            answer = {"error": f"unknown command {command!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


async def _main() -> None:
    loop = asyncio.get_running_loop()
    hello = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    endpoint = _Endpoint(LatencyConfig(**hello["config"]), hello["access_key_id"], hello["secret_access_key"])
    server = await asyncio.start_server(endpoint.serve, "127.0.0.1", 0, limit=MAX_HEADER, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    await _control(endpoint, server)


def main() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(_main())
    else:
        uvloop.run(_main())


if __name__ == "__main__":
    main()
