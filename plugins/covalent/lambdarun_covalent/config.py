"""``[covalent]``: configuration of the covalent backend and of ``AWSLambdaExecutor``.

The first eight keys are those of Covalent's original AWS Lambda executor
(``covalent-awslambda-plugin`` 0.22.0), with its defaults; the rest are lambdarun's.
Values come from ``lambdarun.toml`` (``[covalent]``), ``LAMBDARUN_COVALENT__<KEY>`` and
call options (``options={"covalent": {"timeout": 30}}``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.config import non_negative, positive
from lambdarun.limits import MAX_FUNCTION_TIMEOUT, SYNC_PAYLOAD_LIMIT

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = [
    "CovalentConfig",
    "ORIGINAL_DEFAULTS",
    "SYNC_PAYLOAD_LIMIT",
    "DEFAULT_INLINE_LIMIT",
    "MAX_TIMEOUT",
    "DEFAULT_BUCKET",
    "runtime_session_for",
]

DEFAULT_INLINE_LIMIT = 256 * 1024
#: the original executor's default bucket
DEFAULT_BUCKET = "covalent-lambda-job-resources"
#: Lambda's longest function timeout
MAX_TIMEOUT = float(MAX_FUNCTION_TIMEOUT)


def _timeout(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not 0 < value <= MAX_TIMEOUT:
        raise ValueError(f"must be more than 0 and at most {MAX_TIMEOUT:g} s (Lambda's limit)", attribute)


def _inline_limit(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not 1024 <= value <= SYNC_PAYLOAD_LIMIT:
        raise ValueError(
            f"must be between 1024 and {SYNC_PAYLOAD_LIMIT} bytes (Lambda's 6 MB synchronous "
            "payload limit); larger payloads go through storage automatically",
            attribute,
        )


def _mode(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in ("auto", "sync", "async"):
        raise ValueError("must be 'auto', 'sync' or 'async'", attribute)


_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _bucket_name(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """S3's naming rules (3-63 of a-z 0-9 . -, no "..", not an IP address): a bad name is a
    config error up front, not an S3 error inside a task."""
    if not (
        isinstance(value, str)
        and _BUCKET_NAME.match(value)
        and ".." not in value
        and not re.match(r"^\d+\.\d+\.\d+\.\d+$", value)
    ):
        raise ValueError(
            "must be an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-', starting "
            "and ending with a letter or digit (no 's3://', no prefix)",
            attribute,
        )


def _memory(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not 128 <= value <= 10_240:
        raise ValueError("must be between 128 and 10240 MB (Lambda's limits)", attribute)


@attrs.define(kw_only=True)
class CovalentConfig:
    """``[covalent]`` section.

    Keys of the original executor (same names, same defaults):

    * ``function_name``: the Lambda function running ``lambdarun.runtime.handler``.
    * ``s3_bucket_name``: bucket for spilled payloads. Another name than the default is
      used as is; the default means: the core ``storage_url``, else the target's scratch
      storage (the local target's moto bucket), else this default bucket.
    * ``credentials_file``, ``profile``, ``region``: AWS credentials for the ``aws`` target
      ("" means: lambdarun's ``[aws]`` settings / the core ``region``).
    * ``execution_role``: IAM role of the function (used by ``lambdarun deploy``).
    * ``poll_freq``: accepted for compatibility. The original slept this long between
      checks; asynchronous tasks are now checked by the session's adaptive poller (10 ms,
      backing off to ``[polling] max_interval``, one LIST per prefix per round).
    * ``timeout``: seconds a task may run; :class:`~lambdarun.errors.TaskTimeoutError`
      is raised within ``timeout + 1`` s.

    lambdarun's keys: see the attribute comments.
    """

    function_name: str = "covalent-awslambda-executor"
    s3_bucket_name: str = attrs.field(default=DEFAULT_BUCKET, validator=_bucket_name)
    credentials_file: str = ""
    profile: str = ""
    region: str = ""
    execution_role: str = "CovalentLambdaExecutionRole"
    poll_freq: float = attrs.field(default=5.0, validator=positive)
    timeout: float = attrs.field(default=900.0, validator=_timeout)

    #: the target to run on ("" = the core ``target`` key: "local" or "aws")
    target: str = ""
    #: endpoint URL of a Lambda/S3-compatible service for the aws target ("" = AWS)
    endpoint_url: str = ""
    #: largest request or response (bytes on the wire) sent inline; larger ones go through
    #: storage by reference. At most Lambda's 6 MB synchronous limit.
    inline_limit: int = attrs.field(default=DEFAULT_INLINE_LIMIT, validator=_inline_limit)
    #: "auto": synchronous invoke unless ``expected_duration`` exceeds ``async_threshold``;
    #: "sync" / "async" force one mode
    mode: str = attrs.field(default="auto", validator=_mode)
    #: tasks expected to run longer than this (seconds) use an asynchronous (Event) invoke
    async_threshold: float = attrs.field(default=60.0, validator=non_negative)
    #: how long tasks are expected to run (seconds); unset: short
    expected_duration: float | None = attrs.field(default=None, validator=non_negative)
    #: MemorySize of the function on targets where lambdarun creates it
    memory: int = attrs.field(default=1024, validator=_memory)
    #: extra attempts after a failure of the Lambda environment (crash, throttling, invoke
    #: error); the task's own exceptions are never retried
    retries: int = attrs.field(default=0, validator=non_negative)
    #: keep the per-attempt storage objects (call, outcome) for debugging
    keep_objects: bool = False
    #: threads used for submissions (0 = the target's concurrency)
    max_workers: int = attrs.field(default=0, validator=non_negative)
    #: ``map``: at most this many short (synchronous) tasks share one invocation, each still
    #: verified, claimed, answered and retried on its own; a free thread takes its fair share
    #: of the queued tasks up to this (1: one invocation per task). ``map(chunksize=)`` wins.
    chunksize: int = attrs.field(default=32, validator=positive)
    #: extra directories on the function's PYTHONPATH where lambdarun creates the function
    #: (the local target); the executor sets it for an electron's ``DepsPip`` layer
    python_path: list[str] = attrs.field(factory=list, converter=list)


#: the original executor's defaults, as Covalent's config file holds them
ORIGINAL_DEFAULTS: dict[str, Any] = {
    field.name: field.default
    for field in attrs.fields(CovalentConfig)
    if field.name
    in (
        "function_name",
        "s3_bucket_name",
        "credentials_file",
        "profile",
        "region",
        "execution_role",
        "poll_freq",
        "timeout",
    )
}


def runtime_session_for(session: Session, cfg: CovalentConfig) -> Session:
    """The session to run on: ``session`` with the section's target/AWS keys applied."""
    overrides: dict[str, Any] = {}
    if cfg.target and cfg.target != session.settings.target:
        overrides["target"] = cfg.target
    if cfg.region and cfg.region != session.settings.region:
        overrides["region"] = cfg.region
    aws: dict[str, Any] = {}
    if cfg.profile:
        aws["profile"] = cfg.profile
    if cfg.credentials_file:
        aws["credentials_file"] = cfg.credentials_file
    if cfg.endpoint_url:
        aws["endpoint_url"] = cfg.endpoint_url
    if aws:
        overrides["aws"] = aws
    return session.derive(overrides) if overrides else session
