"""The answers of ``lambdarun.testing.LatencyLambda`` to lambdarun's covalent backend, for
``test_latency_endpoint.py``. Imported inside the endpoint's own process.

No code of the call runs: the call envelope is verified with the session's key
(``lambdarun.envelope.unpack``: signature and age, nothing unpickled), and the reply is an
outcome envelope bound to the call's task id and attempt (``lambdarun.calls.bound_meta``)
carrying one pre-encoded value, signed with the same key (``lambdarun.envelope.pack``), as
the runtime function would return it. The covalent backend's version probe is answered with
this process's versions (``lambdarun_covalent.versions.answer_probe``, the function side's
own answer). The key comes from ``LAMBDARUN_BENCH_SIGNING_KEY``.
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

KEY = os.environ["LAMBDARUN_BENCH_SIGNING_KEY"].encode()
VALUE = 1  # what every call "returns" (abs(-1))
_session = Session(make_plugin_manager(load_entrypoints=False, environ={}),
                   overrides={"signing_key": KEY.decode()}, environ={})
ENCODED = _session.encode(VALUE)


#: answers to version probes, by request body: the versions of this process do not change,
#: and computing them (package metadata) costs ~1 ms, which made the endpoint, not the
#: caller, the limit of the rows that send nothing but probes
_PROBES: dict[bytes, bytes] = {}


def respond(body: bytes) -> bytes:
    known = _PROBES.get(body)
    if known is not None:
        return known
    event = json.loads(body)
    probe = answer_probe(event)
    if probe is not None:
        answer = _PROBES[body] = json.dumps(probe).encode()
        return answer
    if is_batch_event(event):  # the covalent map's batches: one reply per call, in order
        return json.dumps(build_batch_reply([_reply(e) for e in parse_batch_event(event)])).encode()
    return json.dumps(_reply(event)).encode()


def _reply(event: dict) -> dict:
    if not is_call_event(event):
        raise ValueError("not a lambdarun call event")
    call = unpack(parse_call_event(event).inline_call(), KEY, max_age=300)  # verified, nothing unpickled
    started = time.perf_counter()
    outcome = Envelope(kind=OUTCOME, parts=(ENCODED,), meta={
        "ok": True, "stdout": "", "stderr": "", "duration": time.perf_counter() - started,
        **bound_meta(call.meta)})
    return build_reply(outcome=pack(outcome, KEY))
