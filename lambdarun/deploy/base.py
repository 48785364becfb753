"""What every resource kind of a deployment shares: the target's clients, the managed-tag
check, and turning AWS's refusals into :class:`~lambdarun.deploy.errors.DeployPermissionError`.

Each resource kind (``bucket``, ``table``, ``secret``, ``role``, ``layer``, ``function``)
has one module holding a :class:`ResourceHandler` subclass: it reads its current state,
plans its actions and applies them (``create_<kind>`` / ``update_<kind>`` /
``delete_<kind>``, where ``create_*`` returns how to undo it). The orchestrator
(:mod:`lambdarun.deploy.deployer`) only puts them in order and rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lambdarun.deploy.errors import DeployPermissionError
from lambdarun.deploy.plan import FUNCTION_TAG, MANAGED_TAG, MANAGED_VALUE, Action, DeploySpec

if TYPE_CHECKING:
    from lambdarun.types import Target

__all__ = [
    "ResourceHandler",
    "ACCESS_DENIED",
    "error_code",
    "http_status",
    "client_error",
    "code_location",
    "short_hash",
    "Step",
    "Revert",
]

ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "AuthorizationError",
    }
)

#: undoes a create (the orchestrator calls these in reverse order when a later step fails)
Revert = Callable[[], None]
#: ``step(spec, action, state)``: one applied action; ``state`` is shared by one apply
Step = Callable[[DeploySpec, Action, dict[str, Any]], Revert | None]


def error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def http_status(exc: Exception) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def client_error() -> type[Exception]:
    from botocore.exceptions import ClientError

    return ClientError


class ResourceHandler:
    """Base of the resource kinds: the target's clients plus shared checks.

    :param target: a :class:`lambdarun.types.Target`; only its boto3 clients are used.
    :param echo: called with one line per notable step.
    """

    #: the action kinds this handler applies (``role`` also applies ``role-policy``...)
    kinds: tuple[str, ...] = ()
    #: the AWS service whose permission a refused step needs (``iam``, ``s3``...)
    service: str = "aws"

    def __init__(self, target: Target, echo: Callable[[str], None]) -> None:
        self.target = target
        self.echo = echo
        self.ClientError = client_error()

    def client(self, service: str) -> Any:
        return self.target.client(service)

    def managed(self, tags: Mapping[str, str] | None, spec: DeploySpec) -> bool:
        """Whether ``tags`` say deploy created the resource for this function."""
        tags = tags or {}
        return tags.get(MANAGED_TAG) == MANAGED_VALUE and tags.get(FUNCTION_TAG) == spec.function_name

    def read(self, operation: str, action: str, call: Callable[[], Any]) -> Any:
        """``call()``; a refusal becomes a :class:`DeployPermissionError` naming ``action``."""
        try:
            return call()
        except self.ClientError as exc:
            if error_code(exc) in ACCESS_DENIED:
                raise DeployPermissionError(
                    f"{operation} was denied ({error_code(exc)}): grant {action} to the deploying "
                    "identity and deploy again. Nothing was created.",
                    operation=operation,
                    action=action,
                ) from exc
            raise

    def step(self, action: Action) -> Step:
        """The method applying ``action`` (``create_role_policy`` for a created ``role-policy``)."""
        return getattr(self, f"{action.change.value}_{action.kind.replace('-', '_')}")


def code_location(spec: DeploySpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Code``/``Content`` of a function or layer: its zip inline, or where
    a ``code-upload`` action put it in the bucket."""
    if "key" in params:
        return {"S3Bucket": spec.bucket, "S3Key": params["key"]}
    return {"ZipFile": params["archive"].read()}


def short_hash(code_sha256: str) -> str:
    """32 hex digits of a base64 ``CodeSha256`` (names of uploaded zips)."""
    import base64

    return base64.b64decode(code_sha256).hex()[:32]
