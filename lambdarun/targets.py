"""The ``aws`` target (a default plugin) and :class:`Boto3Target`, the base of every target.

A target owns one boto3 session and one client per service for the whole process: clients
are thread-safe and creating one costs ~100 ms, so they are never created per call.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.errors import FunctionNotFoundError, TargetError
from lambdarun.hookspecs import hookimpl
from lambdarun.types import FunctionSpec

if TYPE_CHECKING:
    from lambdarun.config import Settings

__all__ = ["Boto3Target"]

log = structlog.get_logger(__name__)

#: the Lambda client must wait longer than the longest function (900 s)
LAMBDA_READ_TIMEOUT = 905


#: connection errors raised before any byte of the request was sent: retrying cannot run
#: the function twice
_NOT_SENT = ("EndpointConnectionError", "ConnectTimeoutError", "ProxyConnectionError")


def _invoke_needs_retry(response: Any = None, caught_exception: Any = None, **_: Any) -> bool | None:
    """``needs-retry.lambda.Invoke``: veto botocore's retry unless the answer proves that
    nothing ran. None lets the standard retry mode decide (throttling: HTTP 429
    TooManyRequestsException; a connection that could not be opened), False forbids the
    retry (a connection lost or timed out after the request was sent, an HTTP 5xx: the
    function may have run; the backend re-delivers the same attempt, whose claim makes it
    run at most once). Handlers of the more specific event run first and the first
    non-None answer wins, so this vetoes the standard handler."""
    if caught_exception is not None:
        names = {cls.__name__ for cls in type(caught_exception).__mro__}
        if names & set(_NOT_SENT) and not names & {"SSLError"}:
            return None
        return False
    if response is not None:
        status = getattr(response[0], "status_code", 0) if response[0] is not None else 0
        if status == 429:
            return None
        if status >= 500:
            return False
    return None


def guard_invoke_retries(client: Any) -> None:
    """Make botocore re-send ``Invoke`` only when nothing can have run (see
    :func:`_invoke_needs_retry`); every other Lambda operation keeps the standard mode."""
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(
        f"needs-retry.{service}.Invoke", _invoke_needs_retry, unique_id="lambdarun-invoke-retries"
    )


class Boto3Target:
    """A target reached through boto3: real AWS, or any endpoint URLs.

    :param settings: resolved settings (region, ``[aws]`` section).
    :param endpoints: service name -> endpoint URL overrides (``{"lambda": "http://..."}``).
    :param credentials: explicit ``aws_access_key_id``/``aws_secret_access_key`` (the local
        target passes its stack's own, so the user's real credentials are never used).
    """

    name = "aws"
    #: the functions run elsewhere: a service on this machine's loopback is out of their reach
    runs_on_this_machine = False

    def __init__(
        self,
        settings: Settings,
        *,
        endpoints: Mapping[str, str] | None = None,
        credentials: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        if name:
            self.name = name
        self.region = settings.region
        aws = settings.section("aws")
        self._endpoints: dict[str, str] = {}
        if aws.endpoint_url:
            self._endpoints.update(
                {svc: aws.endpoint_url for svc in ("lambda", "s3", "dynamodb", "iam", "sts", "secretsmanager")}
            )
        for svc in ("lambda", "s3", "dynamodb", "secretsmanager"):
            url = getattr(aws, f"{svc}_endpoint_url")
            if url:
                self._endpoints[svc] = url
        self._endpoints.update(endpoints or {})
        self._credentials = dict(credentials or {})
        self._profile = None if credentials else aws.profile
        self._credentials_file = None if credentials else aws.credentials_file
        self._max_attempts = aws.max_attempts
        self._lock = threading.Lock()
        self._boto_session: Any = None
        self._botocore_session: Any = None
        self._clients: dict[str, Any] = {}
        self._secret_keys: dict[str, bytes] = {}

    # --- clients -------------------------------------------------------------------------

    def _session(self) -> Any:
        if self._boto_session is None:
            import boto3
            import botocore.session

            core = botocore.session.Session(profile=self._profile)
            if self._credentials_file:
                core.set_config_variable("credentials_file", self._credentials_file)
                # a configured credentials file wins over AWS_* variables in the environment
                # (botocore's own chain would take those first)
                from botocore.credentials import SharedCredentialProvider

                creds = SharedCredentialProvider(
                    creds_filename=self._credentials_file, profile_name=self._profile or "default"
                ).load()
                if creds is not None:
                    core.set_credentials(creds.access_key, creds.secret_key, creds.token)
            self._boto_session = boto3.session.Session(
                botocore_session=core, region_name=self.region, **self._credentials
            )
            self._botocore_session = core
        return self._boto_session

    def client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                from botocore.config import Config

                config = Config(
                    retries={"mode": "standard", "max_attempts": self._max_attempts},
                    max_pool_connections=64,
                    tcp_keepalive=True,
                    read_timeout=LAMBDA_READ_TIMEOUT if service == "lambda" else 60,
                    connect_timeout=10,
                )
                client = self._session().client(
                    service, endpoint_url=self._endpoints.get(service), config=config
                )
                if service == "lambda":
                    guard_invoke_retries(client)
                self._clients[service] = client
            return client

    def endpoint_url(self, service: str) -> str | None:
        return self._endpoints.get(service)

    def ca_bundle(self) -> str | None:
        """The CA bundle botocore verifies HTTPS with for this target (``ca_bundle`` in the
        profile's config, ``AWS_CA_BUNDLE``), or None for botocore's default (certifi)."""
        self._session()
        return self._botocore_session.get_config_variable("ca_bundle")

    def credentials(self) -> Any:
        """The botocore credentials this target's clients sign with (refreshable ones
        refresh through ``get_frozen_credentials()``), or None when none are configured.
        The invoker signs its requests with them (:mod:`lambdarun.lambda_http`)."""
        return self._session().get_credentials()

    @property
    def concurrency_limit(self) -> int | None:
        return None  # AWS: the account's concurrency limit, not known without asking

    # --- functions and storage -----------------------------------------------------------

    def ensure_function(self, spec: FunctionSpec) -> str:
        client = self.client("lambda")
        try:
            client.get_function(FunctionName=spec.name)
        except client.exceptions.ResourceNotFoundException:
            raise FunctionNotFoundError(
                f"Lambda function {spec.name!r} does not exist on target {self.name!r} "
                f"(region {self.region}); create it with: lambdarun deploy --target "
                f"{self.name} --function {spec.name}"
            ) from None
        return spec.name

    def stop_invocation(self, function_name: str, marker: str) -> bool:
        return False  # AWS Lambda cannot stop one running invocation

    def state_dir(self) -> Path | None:
        return None  # AWS keeps no state on this machine

    def default_storage_url(self) -> str:
        url = self.settings.storage_url
        if not url:
            raise TargetError(
                "the aws target needs scratch storage for large payloads: set storage_url = "
                "'s3://BUCKET/lambdarun' in lambdarun.toml (or LAMBDARUN_STORAGE_URL); "
                "`lambdarun deploy` creates the bucket"
            )
        return url

    def signing_key(self) -> bytes | None:
        """``signing_key``, else the key in the secret ``signing_key_secret`` (read once)."""
        if self.settings.signing_key:
            return self.settings.signing_key.encode("utf-8")
        secret = self.settings.signing_key_secret
        if not secret:
            return None
        with self._lock:
            cached = self._secret_keys.get(secret)
        if cached is None:
            from lambdarun.signing import read_secret

            cached = read_secret(self.client("secretsmanager"), secret)
            with self._lock:
                self._secret_keys[secret] = cached
        return cached

    def signing_key_secret(self) -> str | None:
        """``signing_key_secret`` (the function reads its key there; deploy creates it)."""
        return self.settings.signing_key_secret

    def ensure_storage(self, url: str) -> str:
        """AWS: buckets are created by ``lambdarun deploy`` (never silently in an account)."""
        return url

    def environment(self) -> dict[str, str]:
        env = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}
        for svc, url in self._endpoints.items():
            env[f"AWS_ENDPOINT_URL_{svc.upper()}"] = url
        return env

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


@hookimpl(trylast=True)
def lambdarun_make_target(name: str, settings: Settings) -> Boto3Target | None:
    if name == "aws":
        return Boto3Target(settings)
    return None
