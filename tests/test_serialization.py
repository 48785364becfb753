"""Serialization hooks and the wire envelope."""

from __future__ import annotations

import pickle
import sys
import threading

import msgpack
import pytest

from lambdarun import hookimpl
from lambdarun.calls import decode_call, decode_outcome, encode_call, execute_call
from lambdarun.envelope import Envelope, pack, unpack
from lambdarun.errors import (
    EnvelopeSignatureError,
    EnvelopeVersionError,
    MissingModuleError,
    PythonVersionMismatchError,
    UnpicklableArgumentError,
)
from lambdarun.types import Decoded, Encoded

KEY = "serialization-test-key-0123456789abcdef"
OTHER_KEY = "another-serialization-key-0123456789abc"


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class PointSerializer:
    """A user serializer: Points as two msgpack ints, tagged 'point'."""

    def __init__(self):
        self.encoded = 0

    @hookimpl
    def lambdarun_encode(self, value, session):
        if isinstance(value, Point):
            self.encoded += 1
            return Encoded("point", msgpack.packb([value.x, value.y]))
        return None

    @hookimpl
    def lambdarun_decode(self, encoded, session):
        if encoded.tag == "point":
            return Decoded(Point(*msgpack.unpackb(encoded.data)))
        return None


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        (None, "msgpack"),
        ({"a": [1, 2.5, "x", b"\x00"], "b": True}, "msgpack"),
        (2**64 - 1, "msgpack"),
        (2**70, "cloudpickle"),  # out of msgpack's range
        ((1, 2), "cloudpickle"),  # tuples would come back as lists
        ({1: "int key"}, "cloudpickle"),
        (Point(1, 2), "cloudpickle"),
    ],
)
def test_default_serializers_pick_by_type_and_round_trip(lambdarun_session, value, tag):
    session = lambdarun_session()
    encoded = session.pm.hook.lambdarun_encode(value=value, session=session)
    assert encoded.tag == tag
    decoded = session.pm.hook.lambdarun_decode(encoded=encoded, session=session)
    assert decoded.value == value and type(decoded.value) is type(value)


def test_user_serializer_is_used_and_picked_by_tag(lambdarun_session):
    plugin = PointSerializer()
    session = lambdarun_session(plugin, overrides={"signing_key": KEY})
    data = encode_call(session, max, (Point(1, 2), 3))
    assert plugin.encoded == 1
    call = decode_call(session, data)
    assert call.args == (Point(1, 2), 3)
    # a side without the plugin cannot decode the tag, and says which plugin is missing
    other = lambdarun_session(overrides={"signing_key": KEY})
    with pytest.raises(Exception, match="no serializer plugin decodes the tag 'point'"):
        decode_call(other, data)


def test_one_mib_of_bytes_costs_under_one_percent(lambdarun_session):
    session = lambdarun_session(overrides={"signing_key": KEY})
    payload = bytes(range(256)) * 4096
    assert len(payload) == 1 << 20
    data = pack(Envelope("outcome", (session.encode(payload),)), session.signing_key)
    assert len(data) <= len(payload) * 1.01
    assert session.decode(unpack(data, session.signing_key).parts[0]) == payload


def test_signed_envelopes_refuse_tampering_and_missing_signatures(lambdarun_session):
    signer = lambdarun_session(overrides={"signing_key": KEY})
    data = encode_call(signer, pow, (2, 5))
    assert decode_call(signer, data).args == (2, 5)
    tampered = bytearray(data)
    tampered[-1] ^= 1
    with pytest.raises(EnvelopeSignatureError, match="signature is wrong"):
        decode_call(signer, bytes(tampered))
    other_key = lambdarun_session(overrides={"signing_key": OTHER_KEY})
    with pytest.raises(EnvelopeSignatureError, match="signature is wrong"):
        decode_call(other_key, data)
    unsigned = encode_call(lambdarun_session(overrides={"target": "aws", "allow_unsigned": True}), pow, (2, 5))
    with pytest.raises(EnvelopeSignatureError, match="unsigned envelope"):
        decode_call(signer, unsigned)


def test_refused_envelope_never_unpickles(lambdarun_session, tmp_path):
    """Signing on: an unsigned envelope carrying a malicious pickle is refused before loading."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = Envelope("call", (Encoded("cloudpickle", pickle.dumps(Evil())),), {"nargs": 0, "kwargs": []})
    with pytest.raises(EnvelopeSignatureError):
        decode_call(lambdarun_session(overrides={"signing_key": KEY}), pack(payload))
    assert not marker.exists()


def test_refused_envelope_reaches_the_caller_as_a_typed_error(lambdarun_session):
    lambda_side = lambdarun_session(overrides={"signing_key": KEY})
    caller = lambdarun_session(overrides={"signing_key": OTHER_KEY})
    call = encode_call(caller, pow, (2, 3), meta={"task_id": "t", "attempt": 1})
    outcome = execute_call(lambda_side, call, tee=False)
    # the refusal is not bound to the task (the call's meta could not be trusted): the caller
    # rebuilds the lambdarun error from its type name and message, unpickling nothing
    caller_with_lambda_key = lambdarun_session(overrides={"signing_key": KEY})
    with pytest.raises(EnvelopeSignatureError, match="refused the call: refused an envelope whose signature is wrong"):
        decode_outcome(caller_with_lambda_key, outcome, task_id="t", attempt=1)


def test_unknown_format_version_is_refused(lambdarun_session):
    data = encode_call(lambdarun_session(overrides={"signing_key": KEY}), pow, (2, 3))
    header = msgpack.Unpacker()
    header.feed(data[:64])
    magic, _version, sig = header.unpack()
    forged = msgpack.packb([magic, 99, sig]) + data[header.tell():]
    with pytest.raises(EnvelopeVersionError, match="version 99"):
        decode_call(lambdarun_session(overrides={"signing_key": KEY}), forged)


def test_python_version_mismatch_names_both_versions(lambdarun_session):
    session = lambdarun_session(overrides={"signing_key": KEY})
    env = Envelope("call", (session.encode(Point),), {"nargs": 0, "kwargs": []}, python="3.9")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(PythonVersionMismatchError, match=rf"Python 3\.9 .* Python {here}"):
        decode_call(session, pack(env, session.signing_key))
    # plain msgpack data does not depend on the Python version
    plain = Envelope("call", (session.encode(1),), {"nargs": 0, "kwargs": []}, python="3.9")
    assert decode_call(session, pack(plain, session.signing_key)).func == 1


class PlainPickleSerializer:
    """A third-party pickle-based serializer (tag 'my-pickle') that flags its parts."""

    def __init__(self):
        self.decoded = 0

    @hookimpl
    def lambdarun_encode(self, value, session):
        if isinstance(value, Point):
            return Encoded("my-pickle", pickle.dumps(value), version_sensitive=True)
        return None

    @hookimpl
    def lambdarun_decode(self, encoded, session):
        if encoded.tag == "my-pickle":
            self.decoded += 1
            return Decoded(pickle.loads(encoded.data))
        return None


def test_a_third_party_pickle_serializer_is_refused_across_pythons(lambdarun_session):
    """Version sensitivity travels on the part, not in a list of known tags."""
    plugin = PlainPickleSerializer()
    session = lambdarun_session(plugin, overrides={"signing_key": KEY})
    part = session.encode(Point(1, 2))
    assert (part.tag, part.version_sensitive) == ("my-pickle", True)
    assert session.encode(1).version_sensitive is False
    assert session.encode(object()).version_sensitive is True  # cloudpickle flags its parts
    same = Envelope("call", (session.encode(repr), part), {"nargs": 1, "kwargs": []})
    read = unpack(pack(same, session.signing_key), session.signing_key)
    assert [p.version_sensitive for p in read.parts] == [True, True]
    assert decode_call(session, pack(same, session.signing_key)).args == (Point(1, 2),)
    assert plugin.decoded == 1
    other = Envelope("call", (session.encode(1), part), {"nargs": 1, "kwargs": []}, python="3.9")
    with pytest.raises(PythonVersionMismatchError, match=r"Python 3\.9"):
        decode_call(session, pack(other, session.signing_key))
    assert plugin.decoded == 1  # refused before anything was unpickled


def test_a_part_flag_other_than_true_is_refused(lambdarun_session):
    session = lambdarun_session(overrides={"signing_key": KEY})
    body = msgpack.packb(["3.11", "call", [["msgpack", b"\x01", 1]], {"issued": 0}, None], use_bin_type=True)
    forged = msgpack.packb(["LRUN", 1, None]) + body
    with pytest.raises(Exception, match=r"\[tag, bytes\] or \[tag, bytes, true\]"):
        unpack(forged)


def test_missing_module_is_named(lambdarun_session, tmp_path, monkeypatch):
    (tmp_path / "lr_vanishing_mod.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lr_vanishing_mod

    session = lambdarun_session(overrides={"signing_key": KEY})
    data = encode_call(session, len, (lr_vanishing_mod.Thing(),))
    monkeypatch.delitem(sys.modules, "lr_vanishing_mod")
    (tmp_path / "lr_vanishing_mod.py").unlink()
    with pytest.raises(MissingModuleError, match="module 'lr_vanishing_mod' is not installed"):
        decode_call(session, data)


def test_unpicklable_argument_names_its_position(lambdarun_session):
    session = lambdarun_session(overrides={"signing_key": KEY})

    def f(*args, **kwargs):
        return args

    with pytest.raises(UnpicklableArgumentError, match=r"argument 1 \(lock .*\) of .*f\(\) cannot be serialized"):
        encode_call(session, f, (1, threading.Lock()))
    with pytest.raises(UnpicklableArgumentError, match=r"keyword argument 'gen'"):
        encode_call(session, f, (), {"gen": (i for i in range(3))})


def test_outcome_of_another_task_or_attempt_is_refused_before_unpickling(lambdarun_session, tmp_path):
    from lambdarun.errors import OutcomeMismatchError
    from lambdarun.testing.wire import marker_pickle

    session = lambdarun_session(overrides={"signing_key": KEY})
    marker = tmp_path / "marker"
    meta = {"ok": True, "stdout": "", "stderr": "", "task_id": "t1", "attempt": 1}
    data = pack(Envelope("outcome", (Encoded("cloudpickle", marker_pickle(marker)),), meta), session.signing_key)
    for task_id, attempt in (("t2", 1), ("t1", 2), ("t1", None), (None, None)):
        with pytest.raises(OutcomeMismatchError, match="stale or foreign"):
            decode_outcome(session, data, task_id=task_id, attempt=attempt)
    assert not marker.exists()
    decode_outcome(session, data, task_id="t1", attempt=1)  # control: the right task loads it
    assert marker.exists()


def test_envelopes_expire_and_allow_clock_skew(lambdarun_session):
    import time

    from lambdarun.envelope import CLOCK_SKEW, check_age
    from lambdarun.errors import EnvelopeExpiredError

    session = lambdarun_session(overrides={"signing_key": KEY, "envelope_max_age": 60})
    data = encode_call(session, pow, (2, 5))
    envelope = unpack(data, session.signing_key)
    issued = envelope.issued
    assert abs(issued - time.time()) < 60
    check_age(envelope, 60, now=issued + 59)
    check_age(envelope, 60, now=issued - CLOCK_SKEW + 1)  # the receiver's clock is behind
    with pytest.raises(EnvelopeExpiredError, match="issued 61 s ago.*envelope_max_age = 60"):
        check_age(envelope, 60, now=issued + 61)
    with pytest.raises(EnvelopeExpiredError, match="in the future"):
        check_age(envelope, 60, now=issued - CLOCK_SKEW - 1)
    # the issue time is inside the signed part: changing it breaks the signature
    raw = envelope.meta["issued"]  # as packed (a call's is whole seconds: its claim is filed by it)
    forged = data.replace(msgpack.packb(raw), msgpack.packb(raw + 1000))
    assert forged != data
    with pytest.raises(EnvelopeSignatureError):
        decode_call(session, forged)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda h, b: (msgpack.packb([h[0], h[1], "not bytes"]), b), EnvelopeSignatureError, "signature field"),
        (lambda h, b: (msgpack.packb([h[0], "1", h[2]]), b), EnvelopeVersionError, "version '1'"),
        (lambda h, b: (msgpack.packb(["LRUN", 1]), b), Exception, "bad magic"),
        (lambda h, b: (msgpack.packb(h), msgpack.packb({"a": 1})), Exception, "corrupt envelope body"),
        (lambda h, b: (msgpack.packb(h), b"\xc1\xc1"), Exception, "corrupt envelope body"),
    ],
)
def test_malformed_envelopes_are_typed_errors(lambdarun_session, mutate, error, message):
    from lambdarun.errors import EnvelopeError

    session = lambdarun_session(overrides={"allow_unsigned": True, "target": "aws"})
    data = encode_call(session, pow, (2, 5))
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data[:64])
    header = unpacker.unpack()
    head, body = mutate(header, data[unpacker.tell():])
    with pytest.raises(error, match=message) as info:
        decode_call(session, head + body)
    assert isinstance(info.value, EnvelopeError)


def test_non_bytes_envelope_is_a_typed_error(lambdarun_session):
    from lambdarun.errors import EnvelopeError

    with pytest.raises(EnvelopeError, match="bytes, not str"):
        unpack("text")


def _raises_value_error():
    raise ValueError("mine")


def test_failure_of_a_verified_call_is_never_taken_for_a_refusal(lambdarun_session):
    """A verified call that raises comes back as the function's own exception."""
    session = lambdarun_session(overrides={"signing_key": KEY})
    data = execute_call(session, encode_call(session, _raises_value_error, task_id="t-mine"), tee=False)
    outcome = decode_outcome(session, data, task_id="t-mine", attempt=1)
    assert isinstance(outcome.exception, ValueError) and str(outcome.exception) == "mine"
    assert "refused" not in outcome.meta
