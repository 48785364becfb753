"""Role trust policies enforced on the local stack's STS, as AWS enforces them.

moto's STS answers ``AssumeRole`` for any role and only evaluates the condition keys a
request carries, so a trust policy requiring ``sts:ExternalId`` lets a request *without* an
External ID through. AWS refuses it, and Temporal's Serverless Worker controller checks that
it is refused before it accepts a role. :class:`TrustPolicyGate` (WSGI, behind
:class:`~lambdarun.local.moto_front.MotoFront`, so every request it sees is signed by the
stack) evaluates the role's trust policy for every ``AssumeRole`` before moto answers it:

- the policy is read from moto's IAM (``GetRole``, an in-process call to moto's app);
- the caller is who moto's ``GetCallerIdentity`` says signed the request;
- :func:`evaluate_trust_policy` decides: an explicit ``Deny`` wins, then an ``Allow`` whose
  ``Action``, ``Principal`` and every ``Condition`` match; anything else (no matching
  statement, unknown role, a document that does not parse, an operator we do not know) is
  refused with AWS's 403 ``AccessDenied``: "User: <caller> is not authorized to perform:
  sts:AssumeRole on resource: <role>".

Evaluated: ``Principal`` ``"*"`` / ``{"AWS": ...}`` (``*``, the account id, the account's
``:root`` ARN, the caller's ARN, the role of an assumed-role caller); ``Service`` and
``Federated`` principals never match a signed caller. Condition operators ``StringEquals``,
``StringNotEquals``, ``StringEqualsIgnoreCase``, ``StringNotEqualsIgnoreCase``,
``StringLike``, ``StringNotLike`` (with ``...IfExists``), ``Null``, ``Bool`` over the keys
``sts:ExternalId``, ``sts:RoleSessionName``, ``sts:SourceIdentity``, ``aws:PrincipalArn``,
``aws:PrincipalAccount``, ``aws:PrincipalType``. A key absent from the request matches no
positive operator and every negated one, as on AWS.

The temporary credentials moto issues for an allowed ``AssumeRole`` are recorded
(:class:`IssuedCredentials`) and accepted by the stack's SigV4 verifiers until they expire,
with their session token: the Temporal server invokes the local Lambda with them, as it does
on AWS. (The local stack evaluates no identity policies: a role's credentials can do what
the stack's own credentials can, and only a holder of those could assume the role.)
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import io
import json
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

import attrs
import structlog

log = structlog.get_logger(__name__)

__all__ = ["IssuedCredential", "IssuedCredentials", "TrustPolicyGate", "evaluate_trust_policy",
           "issued_credentials"]

_ACTION = "sts:AssumeRole"
_KNOWN_KEYS = ("sts:externalid", "sts:rolesessionname", "sts:sourceidentity", "aws:principalarn",
               "aws:principalaccount", "aws:principaltype")


class PolicyError(ValueError):
    """A trust policy document that cannot be evaluated (refused, as AWS would not have it)."""


# --------------------------------------------------------------------------- evaluation


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [value]


def _action_matches(statement: Mapping[str, Any]) -> bool:
    if "Action" in statement:
        patterns, negate = statement["Action"], False
    elif "NotAction" in statement:
        patterns, negate = statement["NotAction"], True
    else:
        raise PolicyError("statement has no Action")
    hit = False
    for pattern in _as_list(patterns):
        if not isinstance(pattern, str):
            raise PolicyError("Action must be strings")
        if fnmatch.fnmatchcase(_ACTION.lower(), pattern.lower()):
            hit = True
    return hit != negate


def _principal_matches(statement: Mapping[str, Any], caller_arn: str, account: str) -> bool:
    if "NotPrincipal" in statement:
        raise PolicyError("NotPrincipal is not supported in a role trust policy")
    if "Principal" not in statement:
        raise PolicyError("a trust policy statement needs a Principal")
    principal = statement["Principal"]
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        raise PolicyError("Principal must be \"*\" or an object")
    accepted = {"*", account, f"arn:aws:iam::{account}:root", caller_arn}
    parts = caller_arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts":
        resource = parts[5]
        if resource.startswith("assumed-role/"):
            accepted.add(f"arn:aws:iam::{account}:role/{resource.split('/')[1]}")
        elif resource.startswith("user/"):
            accepted.add(f"arn:aws:iam::{account}:{resource}")
    for kind, values in principal.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise PolicyError(f"unknown principal type {kind!r}")
        for value in _as_list(values):
            if not isinstance(value, str):
                raise PolicyError("principal values must be strings")
            if kind == "AWS" and value in accepted:
                return True
    return False


def _string_test(op: str, actual: str, wanted: str) -> bool:
    if op in ("stringequals", "stringnotequals"):
        return actual == wanted
    if op in ("stringequalsignorecase", "stringnotequalsignorecase"):
        return actual.lower() == wanted.lower()
    # StringLike: * and ? only (no character classes, unlike fnmatch)
    pattern = "".join("*" if c == "*" else "?" if c == "?" else f"[{c}]" if c in "[]" else c for c in wanted)
    return fnmatch.fnmatchcase(actual, pattern)


def _condition_matches(op_name: str, block: Any, context: Mapping[str, str]) -> bool:
    if not isinstance(op_name, str) or not isinstance(block, Mapping):
        raise PolicyError("a Condition maps operators to {key: values}")
    op = op_name.lower()
    if_exists = op.endswith("ifexists")
    if if_exists:
        op = op[: -len("ifexists")]
    for key, values in block.items():
        if not isinstance(key, str):
            raise PolicyError("condition keys must be strings")
        wanted = [str(v).lower() if isinstance(v, bool) else v for v in _as_list(values)]
        if not all(isinstance(v, str) for v in wanted):
            raise PolicyError(f"condition values of {key} must be strings")
        actual = context.get(key.lower())
        if op == "null":
            if not all(v in ("true", "false") for v in wanted):
                raise PolicyError("Null takes \"true\" or \"false\"")
            if not any((actual is None) == (v == "true") for v in wanted):
                return False
            continue
        if op == "bool":
            if actual is None:
                if not if_exists:
                    return False
                continue
            if not any(actual.lower() == v.lower() for v in wanted):
                return False
            continue
        if op not in ("stringequals", "stringnotequals", "stringequalsignorecase",
                      "stringnotequalsignorecase", "stringlike", "stringnotlike"):
            raise PolicyError(f"condition operator {op_name} is not evaluated by the local stack")
        negated = "not" in op
        if actual is None:
            if if_exists or negated:
                continue
            return False
        hit = any(_string_test(op, actual, v) for v in wanted)
        if hit == negated:
            return False
    return True


def evaluate_trust_policy(document: str | Mapping[str, Any], *, caller_arn: str, account: str,
                          context: Mapping[str, str]) -> bool:
    """True when the trust policy ``document`` lets ``caller_arn`` call ``sts:AssumeRole``
    with the request ``context`` (condition keys, any case, absent when not sent).

    Raises :class:`PolicyError` for a document that cannot be evaluated."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as e:
            raise PolicyError(f"not JSON: {e}") from None
    if not isinstance(document, Mapping):
        raise PolicyError("a policy document is a JSON object")
    statements = document.get("Statement")
    if statements is None:
        raise PolicyError("a policy document needs a Statement")
    ctx = {k.lower(): v for k, v in context.items()}
    allowed = False
    for statement in _as_list(statements):
        if not isinstance(statement, Mapping):
            raise PolicyError("each Statement is an object")
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError("Effect must be Allow or Deny")
        conditions = statement.get("Condition", {})
        if not isinstance(conditions, Mapping):
            raise PolicyError("Condition must be an object")
        if not (_action_matches(statement) and _principal_matches(statement, caller_arn, account)):
            continue
        if all(_condition_matches(op, block, ctx) for op, block in conditions.items()):
            if effect == "Deny":
                return False
            allowed = True
    return allowed


# --------------------------------------------------------------------------- issued credentials


@attrs.frozen(repr=False)
class IssuedCredential:
    """Temporary credentials the local STS issued (secret and token hidden from repr)."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: _dt.datetime

    def __repr__(self) -> str:
        return f"IssuedCredential({self.access_key_id!r}, expires={self.expiration.isoformat()})"


class IssuedCredentials:
    """Thread-safe record of the temporary credentials one stack's STS issued."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, IssuedCredential] = {}

    def add(self, credential: IssuedCredential) -> None:
        with self._lock:
            now = _dt.datetime.now(_dt.timezone.utc)
            self._by_key = {k: v for k, v in self._by_key.items() if v.expiration > now}
            self._by_key[credential.access_key_id] = credential

    def get(self, access_key_id: str) -> IssuedCredential | None:
        """The unexpired credential with this key id, or None."""
        with self._lock:
            found = self._by_key.get(access_key_id)
        if found is None or found.expiration <= _dt.datetime.now(_dt.timezone.utc):
            return None
        return found


_registries: dict[str, IssuedCredentials] = {}
_registries_lock = threading.Lock()


def issued_credentials(stack_access_key_id: str) -> IssuedCredentials:
    """The registry of the stack whose own access key id is ``stack_access_key_id`` (its
    moto front records into it; its SigV4 verifiers read it)."""
    with _registries_lock:
        return _registries.setdefault(stack_access_key_id, IssuedCredentials())


# --------------------------------------------------------------------------- WSGI gate


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ET.Element, name: str) -> ET.Element | None:
    for element in root.iter():
        if _local(element.tag) == name:
            return element
    return None


def _access_denied(caller: str, role_arn: str) -> tuple[str, list[tuple[str, str]], bytes]:
    message = f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
    body = ('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            "<Code>AccessDenied</Code><Message>" + _xml_escape(message) + "</Message></Error>"
            "<RequestId>" + str(uuid.uuid4()) + "</RequestId></ErrorResponse>").encode()
    return "403 Forbidden", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))], body


def _xml_escape(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text)


class TrustPolicyGate:
    """WSGI middleware: evaluates the role's trust policy for every STS ``AssumeRole`` and
    records the credentials of each allowed one (see the module docstring).

    :param app: moto's (journaled) WSGI application, reached only by signed requests.
    :param issued: where the issued temporary credentials are recorded.
    """

    def __init__(self, app: Any, issued: IssuedCredentials) -> None:
        self.app = app
        self.issued = issued

    def _call(self, environ: Mapping[str, Any], body: bytes) -> tuple[str, bytes]:
        """Run one internal request through moto's app; (status, body)."""
        from werkzeug.test import EnvironBuilder

        builder = EnvironBuilder(path="/", method="POST", data=body, headers={
            "Host": environ.get("HTTP_HOST", "localhost"),
            "Authorization": environ.get("HTTP_AUTHORIZATION", ""),
            "Content-Type": "application/x-www-form-urlencoded",
        })
        try:
            env = builder.get_environ()
        finally:
            builder.close()
        captured: list[str] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.append(status)
            return lambda data: None

        chunks = self.app(env, start)
        try:
            out = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return (captured[0] if captured else "500"), out

    def _caller(self, environ: Mapping[str, Any]) -> tuple[str, str]:
        status, body = self._call(environ, b"Action=GetCallerIdentity&Version=2011-06-15")
        root = ET.fromstring(body)
        arn, account = _find(root, "Arn"), _find(root, "Account")
        if not status.startswith("200") or arn is None or account is None:
            raise PolicyError("the caller's identity is unknown")
        return arn.text or "", account.text or ""

    def _trust_policy(self, environ: Mapping[str, Any], role_arn: str) -> str | None:
        name = role_arn.rsplit("/", 1)[-1] if ":role/" in role_arn else ""
        if not name:
            return None
        from urllib.parse import urlencode

        # the role is read with an IAM-scoped Authorization (moto routes on the credential scope)
        auth = environ.get("HTTP_AUTHORIZATION", "").replace("/sts/aws4_request", "/iam/aws4_request")
        status, body = self._call({**environ, "HTTP_AUTHORIZATION": auth},
                                  urlencode({"Action": "GetRole", "RoleName": name, "Version": "2010-05-08"}).encode())
        if not status.startswith("200"):
            return None
        root = ET.fromstring(body)
        arn, doc = _find(root, "Arn"), _find(root, "AssumeRolePolicyDocument")
        if arn is None or arn.text != role_arn or doc is None:
            return None
        return unquote(doc.text or "")

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        query = environ.get("QUERY_STRING") or ""
        form = "x-www-form-urlencoded" in (environ.get("CONTENT_TYPE") or "")
        if environ.get("REQUEST_METHOD") not in ("GET", "POST") or not (form or "AssumeRole" in query):
            return self.app(environ, start_response)  # not a query-protocol call: S3 bodies stay unread
        body = environ["wsgi.input"].read() if form else b""
        environ["wsgi.input"] = io.BytesIO(body)
        params: dict[str, list[str]] = parse_qs(query, keep_blank_values=True)
        if form and b"AssumeRole" in body:
            for key, values in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
                params.setdefault(key, []).extend(values)
        if not any(a.lower() == "assumerole" for a in params.get("Action", [])):
            return self.app(environ, start_response)
        role_arn = params.get("RoleArn", [""])[0]
        # one value each, so that what is evaluated here is what moto acts on (a second
        # Action/RoleArn/ExternalId in the query or the body would be parameter pollution)
        polluted = [k for k in ("Action", "RoleArn", "ExternalId", "RoleSessionName", "SourceIdentity")
                    if len(params.get(k, [])) > 1]
        if polluted:
            log.warning("local STS refused AssumeRole with repeated parameters", parameters=polluted)
            status, headers, denied = _access_denied("anonymous", role_arn)
            start_response(status, headers)
            return [denied]
        try:
            caller, account = self._caller(environ)
        except (PolicyError, ET.ParseError):
            caller, account = "anonymous", ""
        context = {"aws:principalarn": caller, "aws:principalaccount": account,
                   "aws:principaltype": "AssumedRole" if ":assumed-role/" in caller else "User"}
        for param, key in (("ExternalId", "sts:externalid"), ("RoleSessionName", "sts:rolesessionname"),
                           ("SourceIdentity", "sts:sourceidentity")):
            if param in params:
                context[key] = params[param][0]
        allowed = False
        reason = "no statement allows it"
        try:
            document = self._trust_policy(environ, role_arn) if account else None
            if document is None:
                reason = "no such role"
            else:
                allowed = evaluate_trust_policy(document, caller_arn=caller, account=account, context=context)
        except (PolicyError, ET.ParseError) as e:
            reason = f"trust policy not evaluable: {e}"
        if not allowed:
            log.warning("local STS refused AssumeRole", role=role_arn, caller=caller, reason=reason,
                        external_id_sent="sts:externalid" in context)
            status, headers, denied = _access_denied(caller, role_arn)
            start_response(status, headers)
            return [denied]
        captured: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = status
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        chunks = self.app(environ, start)
        try:
            out = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if str(captured.get("status", "")).startswith("200"):
            self._record(out)
        return [out]

    def _record(self, body: bytes) -> None:
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return
        fields = {name: _find(root, name) for name in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")}
        if any(v is None or not v.text for v in fields.values()):
            return
        text = {k: v.text for k, v in fields.items() if v is not None and v.text}
        try:
            expiration = _dt.datetime.fromisoformat(text["Expiration"].replace("Z", "+00:00"))
        except ValueError:
            return
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=_dt.timezone.utc)
        self.issued.add(IssuedCredential(text["AccessKeyId"], text["SecretAccessKey"], text["SessionToken"],
                                         expiration))
