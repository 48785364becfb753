"""Signing keys: how they are made, checked, named and read from Secrets Manager.

One owner for key material. The envelope code (:mod:`lambdarun.envelope`) only ever sees
``bytes``; targets use these helpers to give a caller its key
(:meth:`lambdarun.types.Target.signing_key`) and functions the secret holding it.

A key is text of at least :data:`~lambdarun.config.MIN_SIGNING_KEY_BYTES` bytes (UTF-8);
the HMAC key is those bytes. Generated keys are 32 random bytes, URL-safe base64 (43
characters), so the same string works in ``lambdarun.toml``, in an environment variable
and as a Secrets Manager ``SecretString``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from lambdarun.config import MIN_SIGNING_KEY_BYTES
from lambdarun.errors import ConfigError, TargetError

__all__ = ["generate_key", "check_key", "key_id", "read_secret", "SECRET_VARIABLE"]

#: the function environment variable naming the secret (the config key signing_key_secret)
SECRET_VARIABLE = "LAMBDARUN_SIGNING_KEY_SECRET"


def generate_key() -> str:
    """A new key: 32 random bytes, URL-safe base64 without padding."""
    return secrets.token_urlsafe(32)


def check_key(text: Any, where: str) -> bytes:
    """The HMAC key of ``text``; :class:`ConfigError` when it is not text or too short."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"the signing key in {where} is not UTF-8 text") from None
    if not isinstance(text, str) or len(text.encode("utf-8")) < MIN_SIGNING_KEY_BYTES:
        raise ConfigError(
            f"the signing key in {where} is empty or shorter than {MIN_SIGNING_KEY_BYTES} bytes; "
            "store a longer one (python -c \"import secrets; print(secrets.token_urlsafe(32))\")"
        )
    return text.encode("utf-8")


def key_id(key: bytes) -> str:
    """A short public name of ``key`` (an HMAC of a constant: it reveals nothing of the key)."""
    return hmac.new(key, b"lambdarun signing key id", hashlib.sha256).hexdigest()[:16]


def read_secret(client: Any, secret_id: str) -> bytes:
    """The key stored in the secret ``secret_id`` (``SecretString``, or ``SecretBinary``).

    Raises :class:`TargetError` when it cannot be read, :class:`ConfigError` when it holds
    no usable key.
    """
    try:
        response = client.get_secret_value(SecretId=secret_id)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        raise TargetError(
            f"cannot read the signing key secret {secret_id!r} ({code}: {exc}); check "
            "signing_key_secret / LAMBDARUN_SIGNING_KEY_SECRET and that this identity may "
            "secretsmanager:GetSecretValue on it (`lambdarun deploy` grants the function that)"
        ) from exc
    value = response.get("SecretString")
    if value is None:
        value = response.get("SecretBinary")
    return check_key(value, f"secret {secret_id!r}")
