"""The local Lambda service's settings and the AWS limits and constants it applies.

:class:`ServiceOptions` is what :class:`~lambdarun.local.service.LambdaService` is built with;
the module-level constants are Lambda's quotas (payload sizes, code size) as AWS has them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import attrs

from lambdarun.limits import ACCOUNT_CONCURRENCY, INIT_PHASE_LIMIT, SCALING_RATE
from lambdarun.limits import ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT, SYNC_RESPONSE_LIMIT, UNZIPPED_CODE_LIMIT  # noqa: F401 - the local modules take them from here
from lambdarun.local import auth

ACCOUNT_ID = "123456789012"  # moto's default account, so ARNs agree across the stack
LOCAL_CODE_BUCKETS = frozenset({"__local__", "hot-reload"})
# Lambda's quotas: one owner, lambdarun.limits (the local target enforces the same values)
SYNC_REQUEST_LIMIT = SYNC_PAYLOAD_LIMIT
ASYNC_REQUEST_LIMIT = ASYNC_PAYLOAD_LIMIT
ZIP_UPLOAD_LIMIT = 50 * 1024 * 1024
#: largest CreateFunction / UpdateFunctionCode request (a base64 zip in JSON), as on AWS
CODE_REQUEST_LIMIT = 70_167_211
#: largest request of any other operation
OTHER_REQUEST_LIMIT = SYNC_REQUEST_LIMIT
LOG_TAIL_BYTES = 4096
INIT_TIMEOUT = INIT_PHASE_LIMIT  # Lambda's init phase limit (then retried in the first invoke)
#: seconds an environment's supervisor gets to end its process tree before SIGKILL
KILL_GRACE = 5.0
#: errorType of an invocation stopped through ``POST /_lambdarun/functions/{name}/stop``
CANCELLED_ERROR = "Runtime.Cancelled"
RESPONSE_PREVIEW_BYTES = 4096
#: ``custom`` key of an Invoke's ClientContext that stop() matches
STOP_MARKER_KEY = "lambdarun_attempt"
#: set in every function's environment: the stack's endpoints as JSON
LOCAL_ENDPOINTS_VAR = "_LAMBDARUN_LOCAL_ENDPOINTS"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@attrs.frozen
class ServiceOptions:
    """How the local Lambda service behaves (all have defaults).

    :param state_dir: where extracted code (``functions/``) and logs (``logs/``) live.
    :param port: port of the Lambda API (0: a free one).
    :param region: region in ARNs and ``AWS_REGION``.
    :param max_concurrency: the account's concurrent executions (0: AWS's default,
        :data:`~lambdarun.limits.ACCOUNT_CONCURRENCY` = 1,000). Functions without reserved
        concurrency share what reserved concurrency leaves of it; beyond it invocations get
        429 ``ConcurrentInvocationLimitExceeded`` (see :mod:`.throttle`).
    :param scaling_rate: new execution environments one function may get per 10 s (AWS:
        1,000); beyond it 429 ``ConcurrentInvocationLimitExceeded``.
    :param idle_timeout: seconds an idle environment is kept warm before it is reaped.
    :param async_retries: retries of an ``Event`` invocation after a function error.
    :param async_retry_delay: seconds between those attempts (Lambda: 60 s then 120 s).
    :param memory_limit: enforce ``MemorySize``: an environment whose processes' resident
        memory passes it is killed and its invocation fails with ``Runtime.OutOfMemory``
        (see :mod:`.memory`).
    :param cloudwatch_logs: also ship each invocation's log lines to CloudWatch Logs in moto
        (group ``/aws/lambda/<name>``, the environment's stream), in the background, so
        ``logs.get_log_events``/``filter_log_events`` work. Needs a moto endpoint. Off by
        default: it costs ~30% of throughput on 2 cores (boto3 work in the service process).
    :param service_endpoints: ``AWS_ENDPOINT_URL_<SERVICE>`` values given to functions,
        e.g. ``{"S3": "http://127.0.0.1:5000"}``; the key ``""`` sets ``AWS_ENDPOINT_URL``.
    :param python: interpreter of the workers (default: this one, so this venv's
        packages are importable).
    :param record_limit: invocation records kept for ``GET /_lambdarun/invocations`` (the
        oldest are dropped beyond it).
    :param credentials: see :mod:`lambdarun.local.auth`.
    """

    state_dir: Path = attrs.field(converter=lambda p: Path(p).expanduser().resolve())
    port: int = 0
    region: str = "us-east-1"
    max_concurrency: int = 0
    scaling_rate: int = SCALING_RATE
    idle_timeout: float = 300.0
    async_retries: int = 2
    async_retry_delay: float = 1.0
    memory_limit: bool = True
    cloudwatch_logs: bool = False
    service_endpoints: Mapping[str, str] = attrs.field(factory=dict)
    python: str = sys.executable
    record_limit: int = 10_000
    #: the only credentials the API accepts (SigV4); also every function's runtime
    #: credentials. Generated when not given; saved 0600 as ``state_dir/credentials.json``.
    credentials: auth.StackCredentials = attrs.field(factory=auth.StackCredentials.generate)

    @property
    def concurrency_limit(self) -> int:
        """The account's concurrent executions (``GetAccountSettings``'
        ``AccountLimit.ConcurrentExecutions``)."""
        return self.max_concurrency or ACCOUNT_CONCURRENCY
