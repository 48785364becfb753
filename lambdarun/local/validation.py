"""Request validation as AWS Lambda does it before any operation runs.

Two layers:

* **the service model's constraints**, generically: every request is matched to its operation
  by botocore's Lambda service model (method + ``requestUri``), and each input member
  (URI, query string, header, JSON body) is checked against its shape's ``min``/``max``/
  ``pattern``/``enum``. A violation is AWS's framework error: 400 ``ValidationException``
  ``"1 validation error detected: Value 'x' at 'functionName' failed to satisfy constraint:
  Member must satisfy regular expression pattern: ..."`` (several are joined by ``"; "``
  under ``"N validation errors detected: "``). Patterns are Java regexes matched whole.
* **Lambda's semantic checks** at create/update time (:func:`check_function_settings`): reserved
  environment variables, the 4 KB environment limit, deprecated runtimes, a plain function
  name over 64 characters. These answer ``InvalidParameterValueException`` with AWS's text.

AWS references: https://docs.aws.amazon.com/lambda/latest/api/CommonErrors.html (ValidationException),
https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html (reserved keys, 4 KB),
https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html (deprecated runtimes).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import botocore.session

from lambdarun.local.options import LOCAL_CODE_BUCKETS
from lambdarun.local.shapes import ApiError

#: environment variables Lambda sets and refuses in ``Environment.Variables``
#: (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime)
RESERVED_ENVIRONMENT_KEYS = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})
#: bytes of ``Environment.Variables`` as JSON (Lambda: 4 KB in total)
ENVIRONMENT_LIMIT = 4096
#: Python runtimes Lambda no longer accepts for create/update, with the one it recommends
#: (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html#runtimes-deprecated)
DEPRECATED_RUNTIMES = {"python2.7": "python3.13", "python3.6": "python3.13",
                       "python3.7": "python3.13", "python3.8": "python3.13"}


@functools.cache
def _model() -> Any:
    return botocore.session.get_session().get_service_model("lambda")


@functools.cache
def _routes() -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path regex, operation name) of every operation, most specific first."""
    out = []
    for name in _model().operation_names:
        http = _model().operation_model(name).http
        uri = http["requestUri"].split("?", 1)[0].rstrip("/") or "/"
        parts = re.split(r"(\{[A-Za-z0-9]+\+?\})", uri)
        regex = "".join(f"(?P<{p[1:-1].rstrip('+')}>[^/]+)" if p.startswith("{") else re.escape(p)
                        for p in parts)
        out.append((http["method"], re.compile(regex + "/?"), name))
    # literal segments beat parameters: /functions/{F}/versions before /functions/{F}/{x}
    out.sort(key=lambda r: -len(re.sub(r"\(\?P<[^>]+>\[\^/\]\+\)", "", r[1].pattern)))
    return out


def operation_for(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The operation a request is for, and its URI parameters (decoded)."""
    found = _operation_for(method, path)
    return None if found is None else (found[0], dict(found[1]))


@functools.lru_cache(maxsize=4096)  # the same few paths again and again (Invoke of a function)
def _operation_for(method: str, path: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    for m, regex, name in _routes():
        if m == method:
            match = regex.fullmatch(path)
            if match:
                return name, tuple((k, unquote(v)) for k, v in match.groupdict().items())
    return None


def check_request(method: str, path: str, query: Mapping[str, str], headers: Any,
                  body: bytes) -> None:
    """Refuse a request whose input breaks its operation's model constraints (400
    ``ValidationException``); requests of no known operation pass (the router refuses them)."""
    found = operation_for(method, path)
    if found is None:
        return
    name, uri = found
    params: dict[str, Any] = {}
    body_doc: Any = None
    for member, sub, where, key in _members(name):
        if where == "uri":
            if key in uri:
                params[member] = uri[key]
        elif where == "querystring":
            if key in query:
                params[member] = query[key]
        elif where == "header":
            value = headers.get(key)
            if value is not None:
                params[member] = value
        elif where == "payload":
            continue  # an Invoke payload: its own checks (size, JSON) are the data plane's
        else:
            if body_doc is None:
                try:
                    body_doc = json.loads(body or b"{}")
                except ValueError:
                    body_doc = {}
                if not isinstance(body_doc, dict):
                    body_doc = {}
            if member in body_doc:
                params[member] = body_doc[member]
    errors: list[str] = []
    shapes = {member: sub for member, sub, _, _ in _members(name)}
    for member, value in params.items():
        _check(shapes[member], value, _camel(member), errors)
    if errors:
        raise validation_error(errors)


@functools.cache
def _members(operation: str) -> tuple[tuple[str, Any, str, str], ...]:
    """(member, shape, location, wire name) of an operation's input members; location is
    ``uri``/``querystring``/``header``, ``payload`` for a blob body, else ``body``."""
    shape = _model().operation_model(operation).input_shape
    if shape is None:
        return ()
    out = []
    for member, sub in shape.members.items():
        where = sub.serialization.get("location") or (
            "payload" if sub.type_name == "blob" and shape.serialization.get("payload") == member else "body")
        out.append((member, sub, where, sub.serialization.get("name", member)))
    return tuple(out)


def validation_error(errors: list[str]) -> ApiError:
    count = len(errors)
    head = f"{count} validation error{'s' if count > 1 else ''} detected: "
    return ApiError(400, "ValidationException", head + "; ".join(errors))


def constraint_error(value: Any, path: str, constraint: str) -> ApiError:
    """One violation, as :func:`check_request` words it."""
    return validation_error([_violation(value, path, constraint)])


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _violation(value: Any, path: str, constraint: str) -> str:
    return f"Value '{_render(value)}' at '{path}' failed to satisfy constraint: {constraint}"


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value)


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:  # a Java construct Python lacks: AWS checks it, we cannot
        return None


def _problems(shape: Any, value: Any) -> list[str]:
    """The constraints ``value`` breaks of a scalar ``shape``."""
    meta = shape.metadata
    out = []
    kind = shape.type_name
    if kind == "string" and isinstance(value, str):
        if "min" in meta and len(value) < meta["min"]:
            out.append(f"Member must have length greater than or equal to {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"Member must have length less than or equal to {meta['max']}")
        if meta.get("pattern"):
            regex = _pattern(meta["pattern"])
            if regex is not None and not regex.fullmatch(value):
                out.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
        if shape.enum and value not in shape.enum:
            out.append(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
    elif kind in ("integer", "long", "double", "float") and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            out.append(f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            out.append(f"Member must have value less than or equal to {meta['max']}")
    return out


def _check(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        if isinstance(value, Mapping):
            for member, sub in shape.members.items():
                if member in value and value[member] is not None:
                    _check(sub, value[member], f"{path}.{_camel(member)}", errors)
        return
    if kind == "list":
        if not isinstance(value, list):
            return
        meta = shape.metadata
        if "max" in meta and len(value) > meta["max"]:
            errors.append(_violation(value, path, f"Member must have length less than or equal to {meta['max']}"))
        inner = sorted({p for item in value for p in _problems(shape.member, item)})
        if inner:
            errors.append(_violation(value, path, f"Member must satisfy constraint: [{', '.join(inner)}]"))
        return
    if kind == "map":
        if not isinstance(value, Mapping):
            return
        keys = sorted({p for k in value for p in _problems(shape.key, k)})
        if keys:
            errors.append(_violation(value, path, f"Map keys must satisfy constraint: [{', '.join(keys)}]"))
        values = sorted({p for v in value.values() for p in _problems(shape.value, v)})
        if values:
            errors.append(_violation(value, path, f"Map value must satisfy constraint: [{', '.join(values)}]"))
        return
    errors.extend(_violation(value, path, p) for p in _problems(shape, value))


def check_function_settings(req: Mapping[str, Any], *, creating: bool, local_code: bool = False) -> None:
    """Lambda's semantic checks of a CreateFunction / UpdateFunctionConfiguration body.

    A local-directory function (``local_code``: the ``local`` target's own, never deployed as
    is) is exempt from the 4 KB environment limit only: its ``PYTHONPATH`` lists this
    machine's import paths."""
    if creating:
        local_code = (req.get("Code") or {}).get("S3Bucket") in LOCAL_CODE_BUCKETS
        raw = str(req.get("FunctionName") or "")
        if ":" not in raw and len(raw) > 64:
            raise constraint_error(raw, "functionName", "Member must have length less than or equal to 64")
    runtime = req.get("Runtime")
    if runtime in DEPRECATED_RUNTIMES:
        raise ApiError(400, "InvalidParameterValueException",
                       f"The runtime parameter of {runtime} is no longer supported for creating or "
                       f"updating AWS Lambda functions. We recommend you use the new runtime "
                       f"({DEPRECATED_RUNTIMES[runtime]}) while creating or updating functions.")
    variables = (req.get("Environment") or {}).get("Variables") or {}
    if not isinstance(variables, Mapping):
        raise ApiError(400, "InvalidParameterValueException", "Environment.Variables must be a map of strings.")
    reserved = sorted(k for k in variables if k in RESERVED_ENVIRONMENT_KEYS)
    if reserved:
        raise ApiError(400, "InvalidParameterValueException",
                       "Lambda was unable to configure your environment variables because the "
                       "environment variables you have provided contains reserved keys that are "
                       "currently not supported for modification. Reserved keys used in this "
                       f"request: {','.join(reserved)}")
    measured = json.dumps(dict(variables), separators=(",", ":"))
    if len(measured.encode()) > ENVIRONMENT_LIMIT and not local_code:
        raise ApiError(400, "InvalidParameterValueException",
                       "Lambda was unable to configure your environment variables because the "
                       "environment variables you have provided exceeded the 4KB limit. String "
                       f"measured: {measured}")
