"""Layered configuration.

Values are resolved in this order, each layer overriding the one before:

1. defaults (the attrs field defaults below and in each plugin's section class),
2. the config file: ``$LAMBDARUN_CONFIG``, else the nearest ``lambdarun.toml`` or
   ``pyproject.toml`` with a ``[tool.lambdarun]`` table, searching from the working
   directory upwards,
3. environment variables: ``LAMBDARUN_<KEY>`` for core keys and
   ``LAMBDARUN_<SECTION>__<KEY>`` for a section's keys,
4. call arguments (``options=`` of :func:`lambdarun.run` and friends).

Core keys sit at the top level of the file; every plugin declares its own ``[section]``
through the ``lambdarun_register_config`` hook. An unknown key or a bad value is a
:class:`~lambdarun.errors.ConfigError` naming the key, the value, where it came from and
the closest valid key.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from lambdarun.errors import ConfigError

__all__ = [
    "CoreConfig",
    "AwsConfig",
    "PollingConfig",
    "ConfigRegistry",
    "Settings",
    "load_settings",
    "find_config_file",
    "CONTROL_VARIABLES",
    "KNOWN_DISTRIBUTIONS",
    "one_of",
    "positive",
    "non_negative",
    "MIN_SIGNING_KEY_BYTES",
]

#: Environment variables that steer lambdarun itself and are not config keys.
CONTROL_VARIABLES = frozenset(
    {
        "LAMBDARUN_CONFIG",
        "LAMBDARUN_PLUGINS",
        "LAMBDARUN_DISABLE_PLUGIN_AUTOLOAD",
        "LAMBDARUN_BLOCK_PLUGINS",
        "LAMBDARUN_TRACE_PLUGINS",
        # set by `lambdarun deploy`: the id (not the value) of the function's signing key
        "LAMBDARUN_SIGNING_KEY_ID",
    }
)

#: Sections (and backends) provided by lambdarun's own optional distributions.
KNOWN_DISTRIBUTIONS = {
    "covalent": "lambdarun-covalent",
    "temporal": "lambdarun-temporal",
    "durable": "lambdarun-durable",
}


# attrs validators for config fields, raising ValueError(message, attribute) so the error
# names the key; plugins use them for their own sections.


def one_of(*choices: str):
    """Validator: the value is one of ``choices``."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}", attribute)

    return check


def positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: greater than 0 (None passes, for optional fields)."""
    if value is not None and value <= 0:
        raise ValueError("must be greater than 0", attribute)


def port_number(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: a TCP port, 0 (any free port) to 65535 (None passes)."""
    if value is not None and not 0 <= value <= 65535:
        raise ValueError("must be a TCP port from 0 (any free port) to 65535", attribute)


def non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: 0 or more (None passes, for optional fields)."""
    if value is not None and value < 0:
        raise ValueError("must be 0 or more", attribute)


#: shortest signing key accepted (bytes of its UTF-8 text): 256 bits
MIN_SIGNING_KEY_BYTES = 32


def _signing_key(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and len(value.encode("utf-8")) < MIN_SIGNING_KEY_BYTES:
        raise ValueError(
            f"a signing key must be at least {MIN_SIGNING_KEY_BYTES} bytes (this one has "
            f"{len(value.encode('utf-8'))}); generate one with: python -c \"import secrets; "
            "print(secrets.token_urlsafe(32))\", or remove the key to use the local stack's own "
            "key / signing_key_secret",
            attribute,
        )


def _non_empty(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty (remove the key instead)", attribute)


@attrs.define(kw_only=True)
class CoreConfig:
    """Top-level keys of ``lambdarun.toml``."""

    #: backend used when a call does not name one; default (None): the backend an installed
    #: plugin registers as the default (lambdarun-covalent's "covalent")
    backend: str | None = attrs.field(default=None, validator=_non_empty)
    #: where Lambda runs: "local" (embedded Lambda service + moto) or "aws"
    target: str = "local"
    #: AWS region of the target
    region: str = "us-east-1"
    #: scratch storage for spilled payloads; default: the target's own bucket
    storage_url: str | None = None
    #: where call attempts are claimed (at most one run each, lambdarun.claims); default:
    #: the target's claim store (local: a 0700 folder of its state dir), else storage_url
    claims_url: str | None = None
    #: HMAC-SHA256 key signing every envelope (at least 32 bytes); default: the local
    #: stack's own key, or the one in signing_key_secret
    signing_key: str | None = attrs.field(default=None, repr=False, validator=_signing_key)
    #: Secrets Manager secret (name or ARN) holding the signing key (`lambdarun deploy`
    #: creates one); functions always read their key from such a secret
    signing_key_secret: str | None = attrs.field(default=None, validator=_non_empty)
    #: accept and send unsigned envelopes when no signing key is known (anyone who can invoke
    #: the function then runs code in it); a warning is logged at every session start
    allow_unsigned: bool = False
    #: seconds an envelope is accepted after it was issued (calls and outcomes), plus a
    #: clock-skew allowance of lambdarun.envelope.CLOCK_SKEW seconds
    envelope_max_age: float = attrs.field(default=3600.0, validator=positive)
    #: the Lambda function running lambdarun.runtime.handler
    function_name: str = "lambdarun-runtime"
    #: log level of lambdarun's loggers
    log_level: str = attrs.field(
        default="INFO", validator=one_of("DEBUG", "INFO", "WARNING", "ERROR")
    )
    #: threads used by map(); default: the target's concurrency
    max_workers: int | None = attrs.field(default=None, validator=positive)
    #: show a progress bar in map() when attached to a terminal
    progress: bool = True


@attrs.define(kw_only=True)
class AwsConfig:
    """``[aws]``: how the ``aws`` target reaches AWS (or any Lambda-compatible endpoint)."""

    profile: str | None = None
    credentials_file: str | None = None
    #: one endpoint for every service (e.g. a LocalStack-style gateway)
    endpoint_url: str | None = None
    lambda_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    dynamodb_endpoint_url: str | None = None
    secretsmanager_endpoint_url: str | None = None
    #: boto3 retry attempts (standard mode)
    max_attempts: int = attrs.field(default=5, validator=positive)


@attrs.define(kw_only=True)
class PollingConfig:
    """``[polling]``: adaptive backoff of the default poller."""

    initial_interval: float = attrs.field(default=0.01, validator=positive)
    max_interval: float = attrs.field(default=1.0, validator=positive)
    multiplier: float = attrs.field(default=1.6, validator=positive)


class ConfigRegistry:
    """Collects config sections declared through ``lambdarun_register_config``."""

    def __init__(self) -> None:
        self.sections: dict[str, type] = {}

    def add_section(self, name: str, cls: type) -> None:
        """Declare section ``[name]`` described by the attrs class ``cls``."""
        if not attrs.has(cls):
            raise ConfigError(f"config section {name!r}: {cls!r} is not an attrs class")
        for field in attrs.fields(cls):
            if field.default is attrs.NOTHING:
                raise ConfigError(
                    f"config section {name!r}: field {field.name!r} of {cls.__qualname__} "
                    "needs a default"
                )
        if name in self.sections and self.sections[name] is not cls:
            raise ConfigError(
                f"config section {name!r} is declared twice ({self.sections[name]!r} and "
                f"{cls!r}); rename one of them"
            )
        self.sections[name] = cls


@attrs.frozen
class Settings:
    """Resolved configuration: the core keys plus one object per section.

    Core keys read as attributes (``settings.backend``); sections through
    :meth:`section` (``settings.section("covalent").timeout``).
    """

    core: CoreConfig
    sections: Mapping[str, Any]
    sources: Mapping[str, str] = attrs.field(factory=dict)
    config_file: Path | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return getattr(self.core, name)
        except AttributeError:
            raise AttributeError(f"Settings has no core key {name!r}") from None

    def section(self, name: str) -> Any:
        try:
            return self.sections[name]
        except KeyError:
            hint = ""
            if name in KNOWN_DISTRIBUTIONS:
                hint = f"; install it with: pip install {KNOWN_DISTRIBUTIONS[name]}"
            raise ConfigError(
                f"no config section {name!r} is registered (registered: "
                f"{', '.join(sorted(self.sections)) or 'none'}){hint}"
            ) from None

    def source_of(self, dotted_key: str) -> str:
        """Where a value came from: 'default', a file path, an env var or 'call options'."""
        return self.sources.get(dotted_key, "default")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with call-argument overrides applied (validated like every layer)."""
        return _apply_layers(
            {"": type(self.core), **{k: type(v) for k, v in self.sections.items()}},
            base=self,
            layers=[(overrides, "call options")],
        )


# --------------------------------------------------------------------------------------


def find_config_file(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    explicit = environ.get("LAMBDARUN_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f"LAMBDARUN_CONFIG={explicit!r} does not name a file; fix the path or unset it"
            )
        return path
    here = (cwd or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "lambdarun.toml"
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise ConfigError(
                f"{candidate} is not a regular file (a directory?); lambdarun reads its "
                "configuration from a lambdarun.toml file: remove or rename it"
            )
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and b"[tool.lambdarun" in pyproject.read_bytes():
            return pyproject
    return None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix its permissions or remove it") from exc
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("lambdarun", {})
    return data


def _read_env(environ: Mapping[str, str], schema: Mapping[str, type]) -> dict[str, Any]:
    """Environment variables as a nested dict of raw strings, with their variable names."""
    out: dict[str, Any] = {}
    for var, raw in environ.items():
        if not var.startswith("LAMBDARUN_") or var in CONTROL_VARIABLES:
            continue
        rest = var[len("LAMBDARUN_") :].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            out.setdefault(section, {})[key] = _EnvValue(raw, var)
        else:
            out[rest] = _EnvValue(raw, var)
    return out


@attrs.frozen
class _EnvValue:
    raw: str
    var: str


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in attrs.fields(cls)}


def _convert(value: Any, annotation: Any, where: str, key: str) -> Any:
    """Check (and for env strings, parse) ``value`` against a field annotation."""
    from_env = isinstance(value, _EnvValue)
    raw = value.raw if from_env else value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if raw is None or (from_env and raw.strip().lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        errors = []
        for candidate in non_none:
            try:
                return _convert(value, candidate, where, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if annotation is Any:
        return raw

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{key} = {raw!r} from {where}: expected {expected}")

    if annotation is bool:
        if from_env:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise bad("a boolean (true/false/1/0)")
        if isinstance(raw, bool):
            return raw
        raise bad("a boolean")
    if annotation is int:
        if from_env:
            try:
                return int(raw.strip())
            except ValueError:
                raise bad("an integer") from None
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise bad("an integer")
    if annotation is float:
        if from_env:
            try:
                return float(raw.strip())
            except ValueError:
                raise bad("a number") from None
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        raise bad("a number")
    if annotation is str:
        if isinstance(raw, str):
            return raw
        raise bad("a string")
    if origin in (list, tuple) or annotation in (list, tuple):
        if from_env:
            items = [item.strip() for item in raw.split(",") if item.strip()]
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            raise bad("a list")
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is dict or annotation is dict:
        if from_env:
            pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
            if any(len(p) != 2 for p in pairs):
                raise bad("KEY=VALUE pairs separated by commas")
            return {k.strip(): v.strip() for k, v in pairs}
        if isinstance(raw, Mapping):
            return dict(raw)
        raise bad("a table")
    return raw


def _describe(where: str, var: str | None) -> str:
    return var if var else where


def _unknown(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown config key {key!r} in {where}{hint}")


def _apply_layers(
    schema: Mapping[str, type],
    *,
    base: Settings | None,
    layers: list[tuple[Mapping[str, Any], str]],
    config_file: Path | None = None,
) -> Settings:
    # current values as plain dicts: "" is the core
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = dict(base.sources) if base else {}
    for name, cls in schema.items():
        current = (base.core if name == "" else base.sections[name]) if base else cls()
        values[name] = attrs.asdict(current, recurse=False)
    types_by_section = {name: _field_types(cls) for name, cls in schema.items()}
    sections = sorted(n for n in schema if n)

    for layer, where in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and key not in types_by_section[""]:
                if key not in schema:
                    raw_where = where
                    if key in KNOWN_DISTRIBUTIONS:
                        raise ConfigError(
                            f"section [{key}] in {raw_where} configures the {key!r} backend, "
                            f"which is not installed: pip install {KNOWN_DISTRIBUTIONS[key]}"
                        )
                    raise _unknown(f"[{key}]", sections, raw_where)
                for sub_key, sub_value in value.items():
                    source = _describe(where, getattr(sub_value, "var", None))
                    dotted = f"{key}.{sub_key}"
                    if sub_key not in types_by_section[key]:
                        raise _unknown(dotted, list(types_by_section[key]), source)
                    values[key][sub_key] = _convert(
                        sub_value, types_by_section[key][sub_key], source, dotted
                    )
                    sources[dotted] = source
            else:
                source = _describe(where, getattr(value, "var", None))
                if key not in types_by_section[""]:
                    candidates = list(types_by_section[""]) + sections
                    raise _unknown(key, candidates, source)
                values[""][key] = _convert(value, types_by_section[""][key], source, key)
                sources[key] = source

    built: dict[str, Any] = {}
    for name, cls in schema.items():
        try:
            built[name] = cls(**values[name])
        except (ValueError, TypeError) as exc:
            # attrs validators (ours and attrs.validators.*) pass the Attribute in args
            field = next((a.name for a in exc.args if isinstance(a, attrs.Attribute)), None)
            if field is None:
                raise ConfigError(f"section [{name or 'core'}]: {exc}") from exc
            dotted = field if name == "" else f"{name}.{field}"
            raise ConfigError(
                f"{dotted} = {values[name].get(field)!r} from "
                f"{sources.get(dotted, 'default')}: {exc.args[0] if exc.args else exc}"
            ) from exc
    core = built.pop("")
    return Settings(
        core=core,
        sections=types.MappingProxyType(built),
        sources=sources,
        config_file=config_file if config_file is not None else (base.config_file if base else None),
    )


def load_settings(
    registry: ConfigRegistry | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from defaults, config file, environment and ``overrides``."""
    environ = os.environ if environ is None else environ
    schema: dict[str, type] = {"": CoreConfig, "aws": AwsConfig, "polling": PollingConfig}
    if registry is not None:
        for name, cls in registry.sections.items():
            if name in schema and schema[name] is not cls:
                raise ConfigError(f"config section {name!r} is reserved by lambdarun's core")
            schema[name] = cls
    layers: list[tuple[Mapping[str, Any], str]] = []
    path = find_config_file(cwd, environ)
    if path is not None:
        layers.append((_read_file(path), str(path)))
    layers.append((_read_env(environ, schema), "environment"))
    if overrides:
        layers.append((overrides, "call options"))
    return _apply_layers(schema, base=None, layers=layers, config_file=path)
