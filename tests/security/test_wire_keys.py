"""Signing keys: on by default, never in a function's plain environment, never stripped or
replaced by another caller, and unsigned operation only with an explicit allow_unsigned."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys

import pytest

import lambdarun
from lambdarun.calls import decode_outcome, encode_call
from lambdarun.envelope import Envelope, pack, unpack
from lambdarun.errors import EnvelopeSignatureError, FunctionKeyConflictError, SigningKeyMissingError
from lambdarun.runtime import function_environment
from lambdarun.testing.wire import call_event, header_signature, invoke, marker_call
from lambdarun.types import FunctionSpec

KEY_A = "wire-keys-test-key-A-0123456789abcdefghij"


def local_overrides(local_stack, **extra):
    return {"target": "local", "local": {"state_dir": str(local_stack.state_dir)}, "progress": False, **extra}


def test_fresh_install_signs_everything_and_keeps_the_key_out_of_the_environment(
    lambdarun_session, local_stack, monkeypatch
):
    pytest.importorskip("lambdarun_covalent")
    # a caller whose own environment carries a plain key must not leak it into the function
    monkeypatch.setenv("LAMBDARUN_SIGNING_KEY", "leaky-plain-key-0123456789abcdefghijklmn")
    session = lambdarun_session(
        overrides=local_overrides(local_stack, covalent={"function_name": "lambdarun-wire-fresh"}),
        load_entrypoints=True,
    )
    assert session.settings.signing_key is None  # nothing configured (environ={})
    sent, received = [], []
    invoker = session.invoker
    real_invoke = invoker.invoke

    def recording_invoke(function_name, payload, **kwargs):
        sent.append(payload)
        response = real_invoke(function_name, payload, **kwargs)
        received.append(response.payload)
        return response

    real_invoke_async = invoker.invoke_async

    def recording_invoke_async(function_name, payload, **kwargs):
        # the covalent backend's calls go out through invoke_async (its version probe through invoke)
        sent.append(payload)
        handle = real_invoke_async(function_name, payload, **kwargs)
        handle.future.add_done_callback(lambda f: received.append(f.result().payload))
        return handle

    monkeypatch.setattr(invoker, "invoke", recording_invoke)
    monkeypatch.setattr(invoker, "invoke_async", recording_invoke_async)
    assert lambdarun.run(pow, 2, 10, backend="covalent", session=session) == 1024

    key = local_stack.signing_key
    assert key and len(key) >= 32 and session.signing_key == key
    call = base64.b64decode(json.loads(sent[-1])["call"])
    outcome = base64.b64decode(json.loads(received[-1])["outcome"])
    for data in (call, outcome):
        signature = header_signature(data)
        assert isinstance(signature, bytes) and len(signature) == 32
        unpack(data, key)  # verifies with the stack's key
        with pytest.raises(EnvelopeSignatureError):
            unpack(data, b"x" * 32)

    config = local_stack.client("lambda").get_function_configuration(FunctionName="lambdarun-wire-fresh")
    variables = config["Environment"]["Variables"]
    assert "LAMBDARUN_SIGNING_KEY" not in variables
    assert not any(key.decode() in value or "leaky-plain-key" in value for value in variables.values())
    secret = variables["LAMBDARUN_SIGNING_KEY_SECRET"]
    assert local_stack.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"] == key.decode()

    path = local_stack.run_dir / "signing-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == key


def test_another_caller_never_strips_or_replaces_a_functions_key(lambdarun_session, local_stack):
    name = "lambdarun-wire-keyed"
    keyed = lambdarun_session(overrides=local_overrides(local_stack, signing_key=KEY_A))
    keyed.target.ensure_function(FunctionSpec(name=name, timeout=30, environment=function_environment(keyed.settings)))
    lam = local_stack.client("lambda")
    before = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    assert before["LAMBDARUN_SIGNING_KEY_SECRET"]

    other = lambdarun_session(overrides=local_overrides(local_stack))  # the stack's own key
    with pytest.raises(FunctionKeyConflictError, match="does not rewrite a function's key settings"):
        other.target.ensure_function(FunctionSpec(name=name, timeout=30, environment=function_environment(other.settings)))
    assert lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"] == before

    # the keyed function still verifies with its own key only
    assert invoke(lam, call_event(encode_call(keyed, abs, (-2,))), function=name)[1]["outcome"]
    _, payload, _ = invoke(lam, call_event(encode_call(other, abs, (-2,))), function=name)
    with pytest.raises(EnvelopeSignatureError, match="refused the call"):
        decode_outcome(keyed, base64.b64decode(payload["outcome"]), task_id=None, attempt=None)


def test_keyless_aws_caller_cannot_rewrite_or_use_a_keyed_function(lambdarun_session, local_stack, monkeypatch):
    """A caller with no key at all (aws target, allow_unsigned) leaves the function alone and
    its unsigned calls are refused."""
    name = "lambdarun-wire-keyed"
    lam = local_stack.client("lambda")
    keyed = lambdarun_session(overrides=local_overrides(local_stack, signing_key=KEY_A))
    keyed.target.ensure_function(FunctionSpec(name=name, timeout=30, environment=function_environment(keyed.settings)))
    before = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    for var, value in local_stack.environment().items():
        if var.startswith("AWS_") and "ENDPOINT" not in var:
            monkeypatch.setenv(var, value)  # the stack's dummy credentials and region
    keyless = lambdarun_session(overrides={
        "target": "aws",
        "allow_unsigned": True,
        "aws": {"lambda_endpoint_url": local_stack.lambda_url, "s3_endpoint_url": local_stack.moto_url},
    })
    assert keyless.signing_key is None
    keyless.target.ensure_function(FunctionSpec(name=name, environment=function_environment(keyless.settings)))
    assert lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"] == before
    data = encode_call(keyless, abs, (-2,))
    assert header_signature(data) is None
    _, payload, _ = invoke(lam, call_event(data), function=name)
    with pytest.raises(EnvelopeSignatureError, match="unsigned envelope"):
        decode_outcome(keyless, base64.b64decode(payload["outcome"]), task_id=None, attempt=None)


def test_without_a_key_nothing_is_sent_or_accepted(lambdarun_session):
    session = lambdarun_session(overrides={"target": "aws"})
    with pytest.raises(SigningKeyMissingError, match="allow_unsigned"):
        encode_call(session, abs, (1,))
    unsigned = pack(Envelope("outcome", (), {"ok": True}))
    with pytest.raises(SigningKeyMissingError):
        decode_outcome(session, unsigned, task_id=None, attempt=None)


def test_allow_unsigned_warns_at_every_session_start(lambdarun_session, capsys):
    capsys.readouterr()
    lambdarun_session(overrides={"target": "aws", "allow_unsigned": True})
    lambdarun_session(overrides={"target": "aws", "allow_unsigned": True})
    lambdarun_session(overrides={"target": "aws"})
    err = capsys.readouterr().err
    assert err.count("allow_unsigned = true") == 2 and "warning" in err


def _bare_function(local_stack, name, **variables):
    """A lambdarun function with no key secret (created by hand, as a misconfigured deploy)."""
    lam = local_stack.client("lambda")
    paths = [os.getcwd(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    try:
        lam.delete_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        pass
    lam.create_function(
        FunctionName=name,
        Runtime=f"python{sys.version_info.major}.{sys.version_info.minor}",
        Role="arn:aws:iam::123456789012:role/lambdarun-test",
        Handler="lambdarun.runtime.handler",
        Code={"S3Bucket": "__local__", "S3Key": os.getcwd()},
        Timeout=30,
        Environment={"Variables": {
            "LAMBDARUN_TARGET": "aws",
            "LAMBDARUN_STORAGE_URL": "s3://lambdarun-local/lambdarun",
            "PYTHONPATH": os.pathsep.join(paths),
            **variables,
        }},
    )
    return lam


def test_function_without_a_key_refuses_every_call(local_stack, tmp_path):
    lam = _bare_function(local_stack, "lambdarun-wire-nokey")
    marker = tmp_path / "marker"
    error, payload, _ = invoke(lam, call_event(marker_call(marker)), function="lambdarun-wire-nokey")
    assert error == "Unhandled" and payload["errorType"] == "SigningKeyMissingError"
    assert "LAMBDARUN_SIGNING_KEY_SECRET" in payload["errorMessage"]
    assert not marker.exists()


def test_allow_unsigned_function_runs_unsigned_calls_and_warns(local_stack, tmp_path):
    lam = _bare_function(local_stack, "lambdarun-wire-unsigned", LAMBDARUN_ALLOW_UNSIGNED="true")
    marker = tmp_path / "marker"
    error, payload, log = invoke(lam, call_event(marker_call(marker)), function="lambdarun-wire-unsigned", tail=True)
    assert error is None and "outcome" in payload
    assert marker.exists()  # what allow_unsigned gives up: anyone who can invoke runs code
    assert "allow_unsigned" in log and "warning" in log
