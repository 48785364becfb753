"""Planning and applying deployments with boto3, through a lambdarun target's clients.

:class:`Deployer` reads the current state (function, role, bucket, table, layer) and turns
a :class:`~lambdarun.deploy.plan.DeploySpec` plus a built package into a
:class:`~lambdarun.deploy.plan.DeployPlan`; :meth:`Deployer.apply` executes it. Everything
created is tagged (``lambdarun:managed-by``, ``lambdarun:function``); layer versions carry
``lambdarun deploy`` in their description and code zips live under
``<prefix>/deploy/<function>/``. ``destroy`` deletes exactly those, and nothing else.

When a step fails, what this apply had created so far is deleted again (in reverse order)
before the error is raised, so a denied permission never leaves a half-created deployment.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.deploy.config import DeployConfig
from lambdarun.deploy.errors import (
    BucketRegionError,
    BucketUnavailableError,
    DeployError,
    DeployPermissionError,
    FunctionNotManagedError,
    UnsupportedOnTargetError,
)
from lambdarun.deploy.plan import (
    FUNCTION_TAG,
    MANAGED_TAG,
    MANAGED_VALUE,
    Action,
    ApplyResult,
    Change,
    DeployPlan,
    DeploySpec,
)
from lambdarun.deploy.policy import POLICY_NAME, execution_policy, partition_of, trust_policy
from lambdarun.environment import NOT_FORWARDED_SECTIONS
from lambdarun.environment import function_environment as core_function_environment
from lambdarun.signing import SECRET_VARIABLE, check_key, generate_key, key_id

if TYPE_CHECKING:
    from lambdarun.config import Settings
    from lambdarun.deploy.package import BuiltPackage
    from lambdarun.types import Target

__all__ = ["Deployer", "resolve_spec", "function_environment", "default_secret_name", "LAYER_DESCRIPTION", "KEY_ID_VARIABLE"]

log = structlog.get_logger(__name__)

LAYER_DESCRIPTION = "lambdarun deploy"
_ACCESS_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "AuthorizationError",
}
_SERVICE_OF_KIND = {
    "bucket": "s3",
    "objects": "s3",
    "code-upload": "s3",
    "table": "dynamodb",
    "secret": "secretsmanager",
    "role": "iam",
    "role-policy": "iam",
    "layer": "lambda",
    "function": "lambda",
    "function-code": "lambda",
    "function-configuration": "lambda",
}
_NOT_FORWARDED_SECTIONS = NOT_FORWARDED_SECTIONS  # the core builder's
#: the function variable naming its key's id (not the key): a new key changes the function's
#: configuration, so Lambda starts fresh environments that read the new key
KEY_ID_VARIABLE = "LAMBDARUN_SIGNING_KEY_ID"
#: seconds to wait for a new IAM role to become assumable by Lambda (IAM is eventually consistent)
ROLE_PROPAGATION_TIMEOUT = 60.0


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _client_error() -> type[Exception]:
    from botocore.exceptions import ClientError

    return ClientError


# ---------------------------------------------------------------------------------------
# the wanted state, from settings
# ---------------------------------------------------------------------------------------


def _urls_in(settings: Settings) -> list[str]:
    values: list[Any] = [settings.storage_url]
    for name, section in settings.sections.items():
        if name in _NOT_FORWARDED_SECTIONS:
            continue
        for field in getattr(type(section), "__attrs_attrs__", ()):
            values.append(getattr(section, field.name))
    return [v for v in values if isinstance(v, str) and "://" in v]


def _backend_setting(settings: Settings, key: str) -> str | None:
    """``key`` of the default backend's section when the user set it (e.g. ``[covalent]
    function_name`` or ``execution_role``), so deploy creates what that backend will use."""
    section = settings.sections.get(settings.backend)
    if section is None or settings.source_of(f"{settings.backend}.{key}") == "default":
        return None
    value = getattr(section, key, None)
    return value if isinstance(value, str) and value else None


def function_environment(settings: Settings, *, function_name: str, storage_url: str) -> dict[str, str]:
    """The ``LAMBDARUN_*`` variables the deployed function needs: the core's one builder
    (:func:`lambdarun.environment.function_environment`) with every changed setting forwarded
    (the core keys that matter on the Lambda side and the backends' sections)."""
    # the signing key never goes into the environment: the function reads it from the secret
    # named in LAMBDARUN_SIGNING_KEY_SECRET (set by resolve_spec)
    return core_function_environment(settings, storage_url=storage_url, function_name=function_name,
                                     forward_settings=True)


def default_secret_name(function_name: str) -> str:
    """The secret deploy creates for a function's signing key (unless signing_key_secret names one)."""
    return f"lambdarun/{function_name}/signing-key"


def resolve_spec(
    settings: Settings,
    target: Target,
    *,
    function_name: str | None = None,
    layer: bool | None = None,
    rotate_key: bool = False,
) -> DeploySpec:
    """The :class:`DeploySpec` for ``settings`` on ``target`` (asks STS for the account)."""
    config: DeployConfig = settings.section("deploy")
    name = (
        function_name
        or (settings.function_name if settings.source_of("function_name") != "default" else None)
        or _backend_setting(settings, "function_name")
        or settings.function_name
    )
    account = _account(target)
    bucket, prefix = config.bucket, config.prefix.strip("/")
    if settings.storage_url and settings.storage_url.startswith("s3://"):
        url_bucket, _, url_prefix = settings.storage_url[len("s3://"):].partition("/")
        bucket = bucket or url_bucket
        prefix = prefix or url_prefix.strip("/")
    bucket = bucket or f"lambdarun-{account}-{settings.region}"
    prefix = prefix or "lambdarun"
    table = config.table or None
    if table is None:
        for url in _urls_in(settings):
            if url.startswith("dynamodb://"):
                table = url[len("dynamodb://"):].strip("/") or None
                break
    python = config.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    storage_url = f"s3://{bucket}/{prefix}"
    notes = []
    if settings.storage_url != storage_url:
        notes.append(
            f"callers need storage_url = {storage_url!r} (lambdarun.toml or LAMBDARUN_STORAGE_URL) "
            "to spill large payloads to this function's bucket"
        )
    for url in (u for u in _urls_in(settings) if u != settings.storage_url):
        if url.startswith("s3://") and url.rstrip("/") != storage_url and not url.startswith(storage_url + "/"):
            notes.append(
                f"{url} (a backend setting) is outside {storage_url}/, which is all the function's "
                "role may use: move it under that prefix, or grant the role access yourself"
            )
    secret = settings.signing_key_secret or default_secret_name(name)
    if settings.signing_key_secret != secret:
        notes.append(
            f"callers need signing_key_secret = {secret!r} (lambdarun.toml or "
            "LAMBDARUN_SIGNING_KEY_SECRET) to sign their calls with this function's key"
            + (", or the same signing_key" if settings.signing_key else "")
        )
    section = settings.sections.get(settings.backend)
    backend_fn = getattr(section, "function_name", None) if section is not None else None
    if isinstance(backend_fn, str) and backend_fn and backend_fn != name:
        notes.append(
            f"the {settings.backend!r} backend calls the function {backend_fn!r}: set "
            f"[{settings.backend}] function_name = {name!r}, or deploy with --function {backend_fn}"
        )
    return DeploySpec(
        function_name=name,
        region=settings.region,
        account=account,
        role_name=config.role_name or _backend_setting(settings, "execution_role") or f"{name}-role",
        bucket=bucket,
        prefix=prefix,
        table=table,
        runtime=f"python{python}",
        architecture=config.architecture,
        memory_size=config.memory_size,
        timeout=config.timeout,
        environment={
            **function_environment(settings, function_name=name, storage_url=storage_url),
            SECRET_VARIABLE: secret,
        },
        layer=config.layer if layer is None else layer,
        direct_upload_limit=config.direct_upload_limit,
        notes=tuple(notes),
        signing_secret=secret,
        signing_key=settings.signing_key,
        rotate_key=rotate_key,
    )


def _account(target: Target) -> str:
    ClientError = _client_error()
    try:
        return str(target.client("sts").get_caller_identity()["Account"])
    except ClientError as exc:
        if _error_code(exc) in _ACCESS_DENIED:
            raise DeployPermissionError(
                f"the AWS credentials were refused ({_error_code(exc)}): {exc}. Configure valid "
                "credentials ([aws] profile / credentials_file, or the AWS_* variables).",
                operation="GetCallerIdentity",
                action="sts:GetCallerIdentity",
            ) from exc
        raise


# ---------------------------------------------------------------------------------------
# the deployer
# ---------------------------------------------------------------------------------------


class Deployer:
    """Plans and applies deployments on one target (``session.target``).

    :param target: a :class:`lambdarun.types.Target`; only its boto3 clients are used
        (``lambda``, ``iam``, ``s3``, ``dynamodb``, ``sts``).
    :param echo: called with one line per step while applying (the CLI prints them).
    """

    def __init__(self, target: Target, *, echo: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.echo = echo or (lambda line: None)
        self._ClientError = _client_error()

    def client(self, service: str) -> Any:
        return self.target.client(service)

    # --- reading --------------------------------------------------------------------

    def _managed(self, tags: Mapping[str, str] | None, spec: DeploySpec) -> bool:
        tags = tags or {}
        return tags.get(MANAGED_TAG) == MANAGED_VALUE and tags.get(FUNCTION_TAG) == spec.function_name

    def _read(self, operation: str, action: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self._ClientError as exc:
            if _error_code(exc) in _ACCESS_DENIED:
                raise DeployPermissionError(
                    f"{operation} was denied ({_error_code(exc)}): grant {action} to the deploying "
                    "identity and deploy again. Nothing was created.",
                    operation=operation,
                    action=action,
                ) from exc
            raise

    def bucket_state(self, spec: DeploySpec) -> tuple[bool, bool]:
        """(exists, managed) of the bucket; raise when it is unusable."""
        s3 = self.client("s3")
        try:
            resp = s3.head_bucket(Bucket=spec.bucket)
        except self._ClientError as exc:
            status, code = _status(exc), _error_code(exc)
            if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
                return False, False
            if status == 301:
                region = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
                raise self._bucket_region(spec, region) from exc
            if status == 403 or code in _ACCESS_DENIED or code == "403":
                raise BucketUnavailableError(
                    f"bucket {spec.bucket!r} exists but this account cannot use it (403): it belongs "
                    "to another account or denies you. Choose another name with [deploy] bucket "
                    "(or storage_url) and deploy again. Nothing was created."
                ) from exc
            raise
        region = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        if not region:
            location = s3.get_bucket_location(Bucket=spec.bucket).get("LocationConstraint")
            region = location or "us-east-1"
        if region != spec.region:
            raise self._bucket_region(spec, region)
        try:
            tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=spec.bucket)["TagSet"]}
        except self._ClientError:
            tags = {}
        return True, self._managed(tags, spec)

    def _bucket_region(self, spec: DeploySpec, region: str | None) -> BucketRegionError:
        return BucketRegionError(
            f"bucket {spec.bucket!r} is in region {region or 'another region'}, but the function "
            f"deploys to {spec.region}; Lambda fetches code and the function stores payloads in "
            f"its own region. Use a bucket in {spec.region} ([deploy] bucket or storage_url) or "
            f"set region = {region!r}. Nothing was created."
        )

    def table_state(self, spec: DeploySpec) -> tuple[bool, bool]:
        if not spec.table:
            return False, False
        ddb = self.client("dynamodb")
        try:
            desc = self._read(
                "DescribeTable", "dynamodb:DescribeTable", lambda: ddb.describe_table(TableName=spec.table)
            )
        except ddb.exceptions.ResourceNotFoundException:
            return False, False
        try:
            tags = ddb.list_tags_of_resource(ResourceArn=desc["Table"]["TableArn"]).get("Tags", [])
        except self._ClientError:
            tags = []
        return True, self._managed({t["Key"]: t["Value"] for t in tags}, spec)

    def secret_state(self, spec: DeploySpec) -> tuple[dict[str, Any] | None, bool]:
        """(description, managed) of the signing key secret; (None, False) when missing."""
        sm = self.client("secretsmanager")
        try:
            desc = self._read(
                "DescribeSecret", "secretsmanager:DescribeSecret",
                lambda: sm.describe_secret(SecretId=spec.signing_secret),
            )
        except sm.exceptions.ResourceNotFoundException:
            return None, False
        tags = {t["Key"]: t["Value"] for t in desc.get("Tags") or []}
        return desc, self._managed(tags, spec)

    def secret_key(self, spec: DeploySpec) -> bytes:
        sm = self.client("secretsmanager")
        value = self._read(
            "GetSecretValue", "secretsmanager:GetSecretValue",
            lambda: sm.get_secret_value(SecretId=spec.signing_secret),
        )
        return check_key(value.get("SecretString") or value.get("SecretBinary"), f"secret {spec.signing_secret!r}")

    def role_state(self, spec: DeploySpec) -> dict[str, Any] | None:
        iam = self.client("iam")
        try:
            role = self._read("GetRole", "iam:GetRole", lambda: iam.get_role(RoleName=spec.role_name))["Role"]
        except iam.exceptions.NoSuchEntityException:
            return None
        tags = role.get("Tags")
        if tags is None:
            tags = iam.list_role_tags(RoleName=spec.role_name).get("Tags", [])
        role["_managed"] = self._managed({t["Key"]: t["Value"] for t in tags}, spec)
        try:
            role["_policy"] = _as_doc(
                iam.get_role_policy(RoleName=spec.role_name, PolicyName=POLICY_NAME)["PolicyDocument"]
            )
        except iam.exceptions.NoSuchEntityException:
            role["_policy"] = None
        role["_trust"] = _as_doc(role.get("AssumeRolePolicyDocument"))
        return role

    def function_state(self, spec: DeploySpec) -> dict[str, Any] | None:
        lam = self.client("lambda")
        try:
            return self._read(
                "GetFunction", "lambda:GetFunction", lambda: lam.get_function(FunctionName=spec.function_name)
            )
        except lam.exceptions.ResourceNotFoundException:
            return None

    def existing_layer(self, spec: DeploySpec, code_sha256: str) -> str | None:
        description = f"{LAYER_DESCRIPTION} {code_sha256}"
        for version in self._layer_versions(spec):
            if version.get("Description") == description:
                return str(version["LayerVersionArn"])
        return None

    def _layer_versions(self, spec: DeploySpec) -> list[dict[str, Any]]:
        lam = self.client("lambda")
        if self.target.name == "local":
            return []  # the local Lambda service has no layers
        try:
            pages = lam.get_paginator("list_layer_versions").paginate(LayerName=spec.layer_name)
            return [v for page in pages for v in page.get("LayerVersions", [])]
        except lam.exceptions.ResourceNotFoundException:
            return []

    # --- planning -------------------------------------------------------------------

    def policy(self, spec: DeploySpec) -> dict[str, Any]:
        return execution_policy(
            function_name=spec.function_name,
            region=spec.region,
            account=spec.account,
            bucket=spec.bucket,
            prefix=spec.prefix,
            table=spec.table,
            signing_secret=spec.signing_secret or None,
        )

    def _plan_secret(self, spec: DeploySpec) -> tuple[Action, str]:
        """The signing key secret's action and the id of the key the function will use."""
        desc, managed = self.secret_state(spec)
        wanted = spec.signing_key
        if desc is None:
            key = wanted or generate_key()
            what = "the configured signing_key" if wanted else "a new 256-bit signing key"
            return Action(Change.CREATE, "secret", spec.signing_secret, what, {"key": key}), key_id(key.encode())
        current = self.secret_key(spec)
        if spec.rotate_key or (wanted and wanted.encode() != current):
            if not spec.rotate_key:
                raise DeployError(
                    f"the secret {spec.signing_secret!r} holds another key than the configured "
                    "signing_key; deploy with --rotate-key to replace it (callers then need the "
                    "new key), or remove signing_key to use the secret's. Nothing was changed."
                )
            if not managed:
                raise DeployError(
                    f"the secret {spec.signing_secret!r} was not created by lambdarun deploy: "
                    "rotate its value yourself (PutSecretValue), then deploy again. Nothing was changed."
                )
            key = wanted or generate_key()
            return (
                Action(Change.UPDATE, "secret", spec.signing_secret, "new signing key (--rotate-key)", {"key": key}),
                key_id(key.encode()),
            )
        reason = "exists; deploy --rotate-key replaces the key" + ("" if managed else "; not created by deploy, kept by destroy")
        return Action(Change.NOOP, "secret", spec.signing_secret, reason), key_id(current)

    def preflight(self, spec: DeploySpec) -> None:
        """Cheap checks worth failing on before a package is built (no writes)."""
        if spec.layer and self.target.name == "local":
            raise UnsupportedOnTargetError(
                "the local target does not run Lambda layers; deploy without --layer there "
                "(the same zip then holds code and dependencies), or use --target aws"
            )
        self.bucket_state(spec)

    def plan(self, spec: DeploySpec, package: BuiltPackage) -> DeployPlan:
        """Compare the wanted state with what exists; no writes."""
        if spec.layer and self.target.name == "local":
            self.preflight(spec)
        actions: list[Action] = []
        bucket_exists, bucket_managed = self.bucket_state(spec)
        if bucket_exists:
            actions.append(Action(Change.NOOP, "bucket", spec.bucket, "exists" + ("" if bucket_managed else "; not created by deploy, kept by destroy")))
        else:
            actions.append(Action(Change.CREATE, "bucket", spec.bucket, f"in {spec.region}"))
        if spec.table:
            table_exists, table_managed = self.table_state(spec)
            if table_exists:
                actions.append(Action(Change.NOOP, "table", spec.table, "exists" + ("" if table_managed else "; not created by deploy, kept by destroy")))
            else:
                actions.append(Action(Change.CREATE, "table", spec.table, "durable checkpoints (pk, sk), on demand"))
        secret_action, kid = self._plan_secret(spec)
        actions.append(secret_action)

        policy = self.policy(spec)
        role = self.role_state(spec)
        partition = partition_of(spec.region)
        role_arn = f"arn:{partition}:iam::{spec.account}:role/{spec.role_name}"
        if role is None:
            actions.append(Action(Change.CREATE, "role", spec.role_name, "trusts lambda.amazonaws.com", {"policy": policy}))
            actions.append(Action(Change.CREATE, "role-policy", f"{spec.role_name}/{POLICY_NAME}", "least privilege", {"policy": policy}))
        else:
            role_arn = role["Arn"]
            if not role["_managed"]:
                actions.append(Action(Change.NOOP, "role", spec.role_name, "exists, not created by deploy: used as is"))
            else:
                if role["_trust"] != trust_policy():
                    actions.append(Action(Change.UPDATE, "role", spec.role_name, "trust policy differs"))
                else:
                    actions.append(Action(Change.NOOP, "role", spec.role_name, "up to date"))
                if role["_policy"] != policy:
                    change = Change.CREATE if role["_policy"] is None else Change.UPDATE
                    actions.append(Action(change, "role-policy", f"{spec.role_name}/{POLICY_NAME}", "policy differs", {"policy": policy}))
                else:
                    actions.append(Action(Change.NOOP, "role-policy", f"{spec.role_name}/{POLICY_NAME}", "up to date"))

        layers: list[str] = []
        if package.layer is not None:
            arn = self.existing_layer(spec, package.layer.code_sha256)
            if arn:
                actions.append(Action(Change.NOOP, "layer", arn, "same dependencies already published"))
                layers = [arn]
            else:
                params: dict[str, Any] = {"archive": package.layer}
                if package.layer.size > spec.direct_upload_limit:
                    key = f"{spec.code_prefix}layer-{_hex(package.layer.code_sha256)}.zip"
                    actions.append(Action(Change.CREATE, "code-upload", f"s3://{spec.bucket}/{key}", f"layer zip over {spec.direct_upload_limit} bytes", {"archive": package.layer, "key": key}))
                    params["key"] = key
                actions.append(Action(Change.CREATE, "layer", spec.layer_name, "dependencies changed" if self._layer_versions(spec) else "first version", params))
                layers = ["<new layer version>"]

        current = self.function_state(spec)
        code_params: dict[str, Any] = {"archive": package.function}
        upload: Action | None = None
        if package.function.size > spec.direct_upload_limit:
            key = f"{spec.code_prefix}function-{_hex(package.function.code_sha256)}.zip"
            upload = Action(Change.CREATE, "code-upload", f"s3://{spec.bucket}/{key}", f"zip over {spec.direct_upload_limit} bytes: via S3", {"archive": package.function, "key": key})
            code_params["key"] = key
        config = {
            "Role": role_arn,
            "Handler": spec.handler,
            "Runtime": spec.runtime,
            "Timeout": spec.timeout,
            "MemorySize": spec.memory_size,
            "Environment": {"Variables": {**spec.environment, KEY_ID_VARIABLE: kid}},
            "Layers": layers,
        }
        if current is None:
            if upload:
                actions.append(upload)
            actions.append(Action(Change.CREATE, "function", spec.function_name, f"{spec.runtime} {spec.architecture}", {**code_params, "config": config}))
        else:
            tags = current.get("Tags") or {}
            if not self._managed(tags, spec):
                raise FunctionNotManagedError(
                    f"a Lambda function {spec.function_name!r} already exists on target "
                    f"{self.target.name!r} and was not created by lambdarun deploy (it has no "
                    f"{MANAGED_TAG} tag); deploy under another name (--function NAME) or delete it "
                    "first. Nothing was changed."
                )
            cfg = current["Configuration"]
            arch = (cfg.get("Architectures") or ["x86_64"])[0]
            if cfg.get("CodeSha256") != package.function.code_sha256 or arch != spec.architecture:
                if upload:
                    actions.append(upload)
                actions.append(Action(Change.UPDATE, "function-code", spec.function_name, "package changed" if arch == spec.architecture else f"architecture {arch} -> {spec.architecture}", code_params))
            else:
                actions.append(Action(Change.NOOP, "function-code", spec.function_name, "same CodeSha256"))
            have = {
                "Role": cfg.get("Role"),
                "Handler": cfg.get("Handler"),
                "Runtime": cfg.get("Runtime"),
                "Timeout": cfg.get("Timeout"),
                "MemorySize": cfg.get("MemorySize"),
                "Environment": {"Variables": (cfg.get("Environment") or {}).get("Variables") or {}},
                "Layers": [layer["Arn"] for layer in cfg.get("Layers") or []],
            }
            differs = sorted(k for k in config if have.get(k) != config[k])
            if differs:
                actions.append(Action(Change.UPDATE, "function-configuration", spec.function_name, "changed: " + ", ".join(differs), {"config": config}))
            else:
                actions.append(Action(Change.NOOP, "function-configuration", spec.function_name, "up to date"))
        return DeployPlan("deploy", self.target.name, spec, tuple(actions), package)

    def plan_destroy(self, spec: DeploySpec) -> DeployPlan:
        """What ``destroy`` deletes: only resources tagged as created by this deployment."""
        actions: list[Action] = []
        current = self.function_state(spec)
        if current is not None:
            if self._managed(current.get("Tags"), spec):
                actions.append(Action(Change.DELETE, "function", spec.function_name))
            else:
                actions.append(Action(Change.NOOP, "function", spec.function_name, "not created by deploy: kept"))
        for version in self._layer_versions(spec):
            if str(version.get("Description", "")).startswith(LAYER_DESCRIPTION):
                actions.append(Action(Change.DELETE, "layer", version["LayerVersionArn"], params={"version": version["Version"]}))
        if spec.signing_secret:
            desc, managed = self.secret_state(spec)
            if desc is not None:
                actions.append(
                    Action(Change.DELETE, "secret", spec.signing_secret, "the function's signing key")
                    if managed
                    else Action(Change.NOOP, "secret", spec.signing_secret, "not created by deploy: kept")
                )
        role = self.role_state(spec)
        if role is not None:
            if role["_managed"]:
                actions.append(Action(Change.DELETE, "role", spec.role_name, "with its inline policies"))
            else:
                actions.append(Action(Change.NOOP, "role", spec.role_name, "not created by deploy: kept"))
        if spec.table:
            exists, managed = self.table_state(spec)
            if exists:
                actions.append(Action(Change.DELETE, "table", spec.table) if managed else Action(Change.NOOP, "table", spec.table, "not created by deploy: kept"))
        try:
            exists, managed = self.bucket_state(spec)
        except BucketRegionError:
            exists, managed = False, False
        if exists:
            s3 = self.client("s3")
            prefix = f"{spec.prefix}/" if managed else spec.code_prefix
            keys = [
                obj["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket, Prefix=prefix)
                for obj in page.get("Contents", [])
            ]
            if keys:
                actions.append(Action(Change.DELETE, "objects", f"s3://{spec.bucket}/{prefix}", f"{len(keys)} object(s)", {"keys": keys}))
            if managed:
                actions.append(Action(Change.DELETE, "bucket", spec.bucket, "if nothing outside the lambdarun prefix remains"))
            else:
                actions.append(Action(Change.NOOP, "bucket", spec.bucket, "not created by deploy: kept"))
        return DeployPlan("destroy", self.target.name, spec, tuple(actions))

    # --- applying -------------------------------------------------------------------

    def apply(self, plan: DeployPlan) -> ApplyResult:
        """Execute ``plan``; on failure delete what this call created, then raise."""
        done: list[Action] = []
        undo: list[tuple[str, Callable[[], None]]] = []
        state: dict[str, Any] = {"layers": []}
        for action in plan.actions:
            if action.change is Change.NOOP:
                if action.kind == "layer":
                    state["layers"].append(action.name)
                continue
            self.echo(f"{action.change.value} {action.kind} {action.name} ...")
            try:
                step = getattr(self, f"_{action.change.value}_{action.kind.replace('-', '_')}")
                revert = step(plan.spec, action, state)
            except Exception as exc:
                rolled_back = self._rollback(undo)
                raise self._failure(plan, action, exc, rolled_back) from exc
            if revert is not None:
                undo.append((f"{action.kind} {action.name}", revert))
            done.append(action)
        return ApplyResult(plan, tuple(done))

    def _rollback(self, undo: list[tuple[str, Callable[[], None]]]) -> tuple[str, ...]:
        rolled: list[str] = []
        for label, revert in reversed(undo):
            try:
                revert()
                rolled.append(label)
                self.echo(f"rolled back {label}")
            except Exception as exc:  # keep going: report what could not be undone
                log.error("rollback step failed", resource=label, error=repr(exc))
                rolled.append(f"{label} (FAILED to delete: {exc}; delete it by hand)")
        return tuple(rolled)

    def _failure(self, plan: DeployPlan, action: Action, exc: Exception, rolled_back: tuple[str, ...]) -> Exception:
        if isinstance(exc, DeployError):
            exc.rolled_back = rolled_back
            return exc
        if isinstance(exc, self._ClientError):
            code = _error_code(exc)
            operation = getattr(exc, "operation_name", "") or action.kind
            if code in ("BucketAlreadyExists",):
                return BucketUnavailableError(
                    f"the bucket name {plan.spec.bucket!r} is taken by another account (bucket names "
                    "are global); choose another with [deploy] bucket or storage_url and deploy again.",
                    rolled_back=rolled_back,
                )
            if code in _ACCESS_DENIED:
                iam_action = f"{_SERVICE_OF_KIND.get(action.kind, 'aws')}:{operation}"
                return DeployPermissionError(
                    f"{operation} was denied ({code}) while trying to {action.change.value} "
                    f"{action.kind} {action.name!r}: grant {iam_action} to the deploying identity "
                    "and deploy again.",
                    operation=operation,
                    action=iam_action,
                    rolled_back=rolled_back,
                )
            return DeployError(
                f"{operation} failed while trying to {action.change.value} {action.kind} "
                f"{action.name!r}: {code}: {exc}. Fix the cause and deploy again.",
                rolled_back=rolled_back,
            )
        return DeployError(
            f"{action.change.value} {action.kind} {action.name!r} failed: {type(exc).__name__}: {exc}",
            rolled_back=rolled_back,
        )

    # bucket
    def _create_bucket(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Callable[[], None]:
        s3 = self.client("s3")
        kwargs: dict[str, Any] = {"Bucket": spec.bucket}
        if spec.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": spec.region}
        s3.create_bucket(**kwargs)

        def revert() -> None:
            self._empty_prefix(spec.bucket, "")
            s3.delete_bucket(Bucket=spec.bucket)

        try:
            s3.put_public_access_block(
                Bucket=spec.bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
            s3.put_bucket_tagging(
                Bucket=spec.bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in spec.tags.items()]}
            )
        except Exception:
            revert()
            raise
        return revert

    def _empty_prefix(self, bucket: str, prefix: str) -> int:
        s3 = self.client("s3")
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]
        self._delete_keys(bucket, keys)
        return len(keys)

    def _delete_keys(self, bucket: str, keys: list[str]) -> None:
        s3 = self.client("s3")
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})

    def _delete_objects(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self._delete_keys(spec.bucket, list(action.params["keys"]))

    def _delete_bucket(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        s3 = self.client("s3")
        left = s3.list_objects_v2(Bucket=spec.bucket, MaxKeys=5).get("KeyCount", 0)
        if left:
            self.echo(f"kept bucket {spec.bucket}: it holds objects outside {spec.prefix}/ that deploy did not create")
            return
        s3.delete_bucket(Bucket=spec.bucket)

    # table
    def _create_table(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Callable[[], None]:
        ddb = self.client("dynamodb")
        ddb.create_table(
            TableName=spec.table,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
            Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()],
        )

        def revert() -> None:
            ddb.delete_table(TableName=spec.table)

        try:
            ddb.get_waiter("table_exists").wait(TableName=spec.table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        except Exception:
            revert()
            raise
        return revert

    def _delete_table(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("dynamodb").delete_table(TableName=spec.table)

    # signing key secret
    def _create_secret(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Callable[[], None]:
        sm = self.client("secretsmanager")
        sm.create_secret(
            Name=spec.signing_secret,
            SecretString=action.params["key"],
            Description=f"lambdarun envelope signing key of the function {spec.function_name}",
            Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()],
        )

        def revert() -> None:
            sm.delete_secret(SecretId=spec.signing_secret, ForceDeleteWithoutRecovery=True)

        return revert

    def _update_secret(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("secretsmanager").put_secret_value(SecretId=spec.signing_secret, SecretString=action.params["key"])

    def _delete_secret(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        # no recovery window: deploy can create the same name again right away
        self.client("secretsmanager").delete_secret(SecretId=spec.signing_secret, ForceDeleteWithoutRecovery=True)

    # role
    def _create_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Callable[[], None]:
        iam = self.client("iam")
        iam.create_role(
            RoleName=spec.role_name,
            AssumeRolePolicyDocument=json.dumps(trust_policy()),
            Description=f"Execution role of the lambdarun function {spec.function_name}",
            Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()],
        )
        state["role_created"] = time.monotonic()

        def revert() -> None:
            self._delete_role(spec, action, state)

        return revert

    def _update_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("iam").update_assume_role_policy(RoleName=spec.role_name, PolicyDocument=json.dumps(trust_policy()))

    def _create_role_policy(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Callable[[], None]:
        iam = self.client("iam")
        iam.put_role_policy(RoleName=spec.role_name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(action.params["policy"]))

        def revert() -> None:
            try:
                iam.delete_role_policy(RoleName=spec.role_name, PolicyName=POLICY_NAME)
            except iam.exceptions.NoSuchEntityException:
                pass

        return revert

    _update_role_policy = _create_role_policy

    def _delete_role(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        iam = self.client("iam")
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=spec.role_name):
            for name in page.get("PolicyNames", []):
                iam.delete_role_policy(RoleName=spec.role_name, PolicyName=name)
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=spec.role_name):
            for attached in page.get("AttachedPolicies", []):
                iam.detach_role_policy(RoleName=spec.role_name, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=spec.role_name)

    # code in S3 and layers
    def _create_code_upload(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Callable[[], None]:
        s3 = self.client("s3")
        key = action.params["key"]
        s3.upload_file(str(action.params["archive"].path), spec.bucket, key)

        def revert() -> None:
            s3.delete_object(Bucket=spec.bucket, Key=key)

        return revert

    def _code(self, spec: DeploySpec, params: Mapping[str, Any]) -> dict[str, Any]:
        if "key" in params:
            return {"S3Bucket": spec.bucket, "S3Key": params["key"]}
        return {"ZipFile": params["archive"].read()}

    def _create_layer(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Callable[[], None]:
        lam = self.client("lambda")
        archive = action.params["archive"]
        resp = lam.publish_layer_version(
            LayerName=spec.layer_name,
            Description=f"{LAYER_DESCRIPTION} {archive.code_sha256}",
            Content=self._code(spec, action.params),
            CompatibleRuntimes=[spec.runtime],
            CompatibleArchitectures=[spec.architecture],
        )
        state["layers"].append(resp["LayerVersionArn"])

        def revert() -> None:
            lam.delete_layer_version(LayerName=spec.layer_name, VersionNumber=resp["Version"])

        return revert

    def _delete_layer(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("lambda").delete_layer_version(LayerName=spec.layer_name, VersionNumber=action.params["version"])

    # function
    def _config(self, action: Action, state: dict[str, Any]) -> dict[str, Any]:
        config = dict(action.params["config"])
        config["Layers"] = list(state["layers"])
        return config

    def _wait(self, waiter: str, name: str) -> None:
        lam = self.client("lambda")
        try:
            lam.get_waiter(waiter).wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
        except Exception as exc:
            cfg = lam.get_function_configuration(FunctionName=name)
            reason = cfg.get("StateReason") or cfg.get("LastUpdateStatusReason") or str(exc)
            raise DeployError(
                f"function {name!r} did not become ready ({waiter}): {reason}. Check the "
                "function in the console/logs, fix the cause and deploy again."
            ) from exc

    def _create_function(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Callable[[], None]:
        lam = self.client("lambda")
        kwargs = dict(
            FunctionName=spec.function_name,
            Code=self._code(spec, action.params),
            Architectures=[spec.architecture],
            PackageType="Zip",
            Description=f"lambdarun runtime ({LAYER_DESCRIPTION})",
            Tags=dict(spec.tags),
            **self._config(action, state),
        )
        deadline = time.monotonic() + ROLE_PROPAGATION_TIMEOUT
        delay = 1.0
        while True:
            try:
                lam.create_function(**kwargs)
                break
            except lam.exceptions.InvalidParameterValueException as exc:
                # a role created seconds ago may not be assumable yet (IAM is eventually consistent)
                if "role" in str(exc).lower() and "role_created" in state and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 1.5, 5.0)
                    continue
                raise

        def revert() -> None:
            lam.delete_function(FunctionName=spec.function_name)

        try:
            self._wait("function_active_v2", spec.function_name)
        except Exception:
            revert()
            raise
        return revert

    def _update_function_code(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        lam = self.client("lambda")
        lam.update_function_code(FunctionName=spec.function_name, Architectures=[spec.architecture], **self._code(spec, action.params))
        self._wait("function_updated_v2", spec.function_name)

    def _update_function_configuration(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        lam = self.client("lambda")
        lam.update_function_configuration(FunctionName=spec.function_name, **self._config(action, state))
        self._wait("function_updated_v2", spec.function_name)

    def _delete_function(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("lambda").delete_function(FunctionName=spec.function_name)


def _as_doc(document: Any) -> Any:
    if document is None:
        return None
    if isinstance(document, str):
        from urllib.parse import unquote

        text = document if document.lstrip().startswith("{") else unquote(document)
        return json.loads(text)
    return document


def _hex(code_sha256: str) -> str:
    import base64

    return base64.b64decode(code_sha256).hex()[:32]

