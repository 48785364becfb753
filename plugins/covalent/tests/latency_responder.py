"""The answers of :class:`lambdarun.testing.LatencyLambda` to the covalent backend in these
tests (``test_flows.py``); imported inside the endpoint's own process. A copy of what
``benchmarks/_latency_responder.py`` does, so the tests do not import benchmarks/.

No code of the call runs: the call envelope is verified with the session's key (signature and
age, nothing unpickled) and answered with a signed outcome bound to the call's task id and
attempt, carrying the value 1 (``abs(-1)``), as the runtime function would return it. The
version probe gets the function side's own answer. Each call's ``task_id`` and ``attempt`` are
appended to ``LAMBDARUN_TEST_CALL_LOG`` (one JSON line per delivery), when set.
"""

from __future__ import annotations

import json
import os
import time

from lambdarun.calls import OUTCOME, bound_meta
from lambdarun.envelope import Envelope, pack, unpack
from lambdarun.plugins import make_plugin_manager
from lambdarun.protocol import (
    build_batch_reply,
    build_reply,
    is_batch_event,
    is_call_event,
    parse_batch_event,
    parse_call_event,
)
from lambdarun.session import Session
from lambdarun_covalent.versions import answer_probe

KEY = os.environ["LAMBDARUN_TEST_SIGNING_KEY"].encode()
CALL_LOG = os.environ.get("LAMBDARUN_TEST_CALL_LOG")
_session = Session(make_plugin_manager(load_entrypoints=False, environ={}),
                   overrides={"signing_key": KEY.decode()}, environ={})
ENCODED = _session.encode(1)


def respond(body: bytes) -> bytes:
    event = json.loads(body)
    probe = answer_probe(event)
    if probe is not None:
        return json.dumps(probe).encode()
    if is_batch_event(event):
        return json.dumps(build_batch_reply([_reply(e) for e in parse_batch_event(event)])).encode()
    return json.dumps(_reply(event)).encode()


def _reply(event: dict) -> dict:
    if not is_call_event(event):
        raise ValueError("not a lambdarun call event")
    call = unpack(parse_call_event(event).inline_call(), KEY, max_age=300)  # verified, nothing unpickled
    if CALL_LOG:
        with open(CALL_LOG, "a") as log:
            log.write(json.dumps({"task_id": call.meta.get("task_id"), "attempt": call.meta.get("attempt")}) + "\n")
    started = time.perf_counter()
    outcome = Envelope(kind=OUTCOME, parts=(ENCODED,), meta={
        "ok": True, "stdout": "", "stderr": "", "duration": time.perf_counter() - started, **bound_meta(call.meta)})
    return build_reply(outcome=pack(outcome, KEY))
