"""The settings of ``AWSLambdaExecutor``: where each comes from (the constructor, lambdarun's
configuration, Covalent's config file, the default), the sessions executors share, and the
arguments refused with the key that was meant."""

from __future__ import annotations

import json
import os
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.errors import ConfigError

from lambdarun_covalent.config import CovalentConfig

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = [
    "SETTING_KEYS",
    "covalent_config_file",
    "read_covalent_section",
    "resolve_settings",
    "session_for",
    "lambdarun_settings",
    "refuse_unknown_arguments",
    "task_id_of",
]

#: the executor's settings: the keys of the ``[covalent]`` section
SETTING_KEYS: tuple[str, ...] = tuple(f.name for f in attrs.fields(CovalentConfig))


# --------------------------------------------------------------------------------------
# Covalent's config file, read without importing Covalent
# --------------------------------------------------------------------------------------


def covalent_config_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where Covalent keeps its config (same rule as Covalent's ``get_default_sdk_config``)."""
    environ = os.environ if environ is None else environ
    base = (
        environ.get("COVALENT_CONFIG_DIR")
        or environ.get("XDG_CONFIG_DIR")
        or os.path.join(environ.get("HOME", str(Path.home())), ".config", "covalent")
    )
    return Path(base) / "covalent.conf"


def read_covalent_section(path: Path | None = None) -> dict[str, Any]:
    """``[executors.awslambda]`` of Covalent's config file, or ``{}`` without one."""
    path = path or covalent_config_file()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Covalent's config file {path} cannot be read: {exc}; fix or remove it") from exc
    section = data.get("executors", {}).get("awslambda", {})
    return dict(section) if isinstance(section, Mapping) else {}


# --------------------------------------------------------------------------------------
# sessions shared by executor instances (Covalent builds one executor per task)
# --------------------------------------------------------------------------------------

_sessions: dict[tuple[int, str], Session] = {}
_sessions_lock = threading.Lock()


def session_for(base: Session | None, values: Mapping[str, Any]) -> Session:
    if base is None:
        from lambdarun.session import get_session

        base = get_session()
    key = (id(base), json.dumps(dict(values), sort_keys=True, default=str))
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None or session.closed or base.closed:
            session = base.derive({"covalent": dict(values)})
            _sessions[key] = session
        return session


def lambdarun_settings(session: Session | None) -> Any:
    if session is not None:
        return session.settings
    from lambdarun.session import get_session

    return get_session().settings


#: keyword arguments Covalent's executor base classes take (everything else is refused)
BASE_KEYWORDS = frozenset({"log_stdout", "log_stderr", "cache_dir", "time_limit", "remote_cache", "covalent_version"})
#: names people reach for, and the key that means it
ALIASES = {"memory_size": "memory", "memorysize": "memory", "memory_mb": "memory", "bucket": "s3_bucket_name",
            "s3_bucket": "s3_bucket_name", "role": "execution_role", "function": "function_name"}


def refuse_unknown_arguments(kwargs: Mapping[str, Any]) -> None:
    """The original executor raises ``TypeError`` for an argument it does not take; so do we
    (a setting silently ignored is worse than an error), with the key that was meant."""
    import difflib

    unknown = sorted(set(kwargs) - BASE_KEYWORDS)
    if not unknown:
        return
    name = unknown[0]
    known = sorted({*SETTING_KEYS, *BASE_KEYWORDS})
    meant = ALIASES.get(name.lower()) or next(iter(difflib.get_close_matches(name, known, n=1)), None)
    hint = f"; did you mean {meant!r}?" if meant else ""
    raise TypeError(
        f"AWSLambdaExecutor() got an unexpected keyword argument {name!r}{hint} (it takes: "
        f"{', '.join(known)}; by name, Covalent passes every key of [executors.awslambda] in "
        "covalent.conf as an argument too)"
    )


def task_id_of(handle: Any) -> str | None:
    if handle is None:
        return None
    if isinstance(handle, str):
        try:
            handle = json.loads(handle)
        except ValueError:
            return handle
    if isinstance(handle, Mapping):
        value = handle.get("task_id")
        return str(value) if value else None
    return str(handle)


def resolve_settings(
    given: Mapping[str, Any], settings: Any, covalent_section: Mapping[str, Any]
) -> dict[str, Any]:
    """Each ``[covalent]`` key from: argument, lambdarun config (when set), Covalent's file,
    default. Validated like lambdarun's own config (``ConfigError`` naming the key)."""
    configured = settings.section("covalent")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in SETTING_KEYS:
        if given.get(key) is not None:
            values[key], sources[key] = given[key], "the constructor"
        elif settings.source_of(f"covalent.{key}") != "default":
            values[key], sources[key] = getattr(configured, key), settings.source_of(f"covalent.{key}")
        elif key in covalent_section:
            values[key], sources[key] = covalent_section[key], "Covalent's config [executors.awslambda]"
        else:
            values[key], sources[key] = getattr(configured, key), "default"
    try:
        checked = CovalentConfig(**values)
    except (TypeError, ValueError) as exc:
        field = next((a.name for a in exc.args if isinstance(a, attrs.Attribute)), None)
        where = sources.get(field or "", "the executor settings")
        message = exc.args[0] if exc.args else exc
        raise ConfigError(f"AWSLambdaExecutor {field} = {values.get(field or '')!r} from {where}: {message}") from exc
    return attrs.asdict(checked)
