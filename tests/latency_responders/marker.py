"""A responder for tests/test_latency_endpoint.py: touches the file named by the event's
``marker`` field, so a test can tell whether a request reached the responder."""

import json
import os


def respond(body: bytes) -> bytes:
    event = json.loads(body)
    path = event["marker"]
    with open(path, "a") as f:
        f.write("ran\n")
    return json.dumps({"responded": os.path.basename(path)}).encode()


def fail(body: bytes) -> bytes:
    raise ValueError("the responder refused this payload")
