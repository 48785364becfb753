"""Version coupling: the runtime function states what it runs, the caller checks it first.

Pickled code only loads where Python's major.minor matches, and cloudpickle, lambdarun and
Covalent each have their own formats (Covalent's ``TransportableObject`` is what an electron
is shipped as). Before the first task on a function, the caller invokes it once with a probe
event; the function answers with its versions (:func:`answer_probe`, through the
``lambdarun_handle_event`` hook) and a mismatch is a :class:`VersionMismatchError` naming
both sides, before any task runs. The answer is cached per target and function for the
process.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import threading
from importlib import metadata
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.errors import LambdarunError
from lambdarun.types import InvocationType

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = [
    "PROBE_FIELD",
    "VersionMismatchError",
    "local_versions",
    "answer_probe",
    "remote_versions",
    "check_versions",
    "check_covalent_version",
]

log = structlog.get_logger(__name__)

#: the probe event is ``{PROBE_FIELD: 1}``
PROBE_FIELD = "lambdarun_covalent_versions"

#: what must match between the caller and the function, and how closely (leading parts)
_MUST_MATCH = {"python": 2, "cloudpickle": 2, "lambdarun": 2}


class VersionMismatchError(LambdarunError):
    """The runtime function runs other versions than the caller; no task was run."""


def _version(distribution: str, module: str | None = None) -> str:
    """The installed version; the module's ``__version__`` where a package was copied without
    its metadata (a deployment zip may be); "" when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        pass
    name = module or distribution
    if importlib.util.find_spec(name) is None:
        return ""
    try:
        return str(getattr(importlib.import_module(name), "__version__", "") or "unknown")
    except Exception:  # installed but broken: say so rather than "not installed"
        return "unknown"


def local_versions() -> dict[str, str]:
    """Python, lambdarun, lambdarun-covalent, cloudpickle and Covalent ("" = not installed)."""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}",
        "lambdarun": _version("lambdarun"),
        "lambdarun_covalent": _version("lambdarun-covalent", "lambdarun_covalent"),
        "cloudpickle": _version("cloudpickle"),
        "covalent": _version("covalent"),
    }


def answer_probe(event: Any) -> dict[str, Any] | None:
    """Lambda side: the versions this function runs, for a probe event."""
    if isinstance(event, dict) and event.get(PROBE_FIELD) == 1 and len(event) == 1:
        return {PROBE_FIELD: local_versions()}
    return None


def remote_versions(session: Session, function_name: str) -> dict[str, str]:
    """Ask the function which versions it runs (one synchronous invoke)."""
    response = session.invoker.invoke(
        function_name, json.dumps({PROBE_FIELD: 1}).encode(), invocation_type=InvocationType.REQUEST_RESPONSE
    )
    try:
        body = json.loads(response.payload)
    except ValueError:
        body = None
    if response.function_error or not isinstance(body, dict) or not isinstance(body.get(PROBE_FIELD), dict):
        detail = ""
        if isinstance(body, dict):
            detail = f" ({body.get('errorType', '')}: {str(body.get('errorMessage', ''))[:300]})"
        raise VersionMismatchError(
            f"the Lambda function {function_name!r} did not state its versions{detail}: it runs "
            "no lambdarun-covalent, or an older one. Redeploy it from this environment "
            f"(`lambdarun deploy --function {function_name}`) so both sides run the same "
            f"versions ({_describe(local_versions())})."
        )
    return {str(k): str(v) for k, v in body[PROBE_FIELD].items()}


def _describe(versions: dict[str, str]) -> str:
    return ", ".join(f"{name} {value or 'not installed'}" for name, value in versions.items())


def _leading(version: str, parts: int) -> tuple[str, ...]:
    return tuple(version.split(".")[:parts])


_checked: dict[tuple[int, str], dict[str, str]] = {}
_locks: dict[tuple[int, str], threading.Lock] = {}
_guard = threading.Lock()


def check_versions(session: Session, function_name: str) -> dict[str, str]:
    """The function's versions, checked against this process's (cached once they match).

    :raises VersionMismatchError: Python, cloudpickle or lambdarun differ in major.minor.
    """
    key = (id(session.target), function_name)
    with _guard:
        known = _checked.get(key)
        if known is not None:
            return known
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # one probe per function, however many tasks start at once
        known = _checked.get(key)
        if known is not None:
            return known
        remote = remote_versions(session, function_name)
        local = local_versions()
        wrong = [
            name
            for name, parts in _MUST_MATCH.items()
            if _leading(remote.get(name, ""), parts) != _leading(local[name], parts)
        ]
        if wrong:
            raise VersionMismatchError(
                f"the Lambda function {function_name!r} runs "
                + ", ".join(f"{n} {remote.get(n) or 'not installed'}" for n in wrong)
                + "; this process runs "
                + ", ".join(f"{n} {local[n] or 'not installed'}" for n in wrong)
                + ". Pickled calls and results only load where these match (major.minor); no "
                "task was run. Redeploy the function from this environment (`lambdarun deploy "
                f"--function {function_name}`), or run the caller with the function's versions."
            )
        log.debug("runtime function versions match", function=function_name, versions=remote)
        with _guard:
            _checked[key] = remote
        return remote


def check_covalent_version(remote: dict[str, str], function_name: str) -> None:
    """An electron is shipped as Covalent's ``TransportableObject``: the function needs
    Covalent with this process's major.minor."""
    local = local_versions()["covalent"]
    theirs = remote.get("covalent", "")
    if local and _leading(theirs, 2) != _leading(local, 2):
        raise VersionMismatchError(
            f"the Lambda function {function_name!r} runs Covalent {theirs or 'not installed'}, "
            f"this Covalent server runs {local}: electrons are shipped as Covalent objects that "
            "only load with the same major.minor; no task was run. Redeploy the function with "
            f"covalent=={local} (`lambdarun deploy --function {function_name}` from this "
            "environment, or list it in the [deploy] requirements)."
        )


def forget() -> None:
    """Drop the cached answers (tests; after a redeploy in a long-lived process)."""
    with _guard:
        _checked.clear()
