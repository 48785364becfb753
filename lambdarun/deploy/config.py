"""``[deploy]``: how ``lambdarun deploy`` builds and names what it creates."""

from __future__ import annotations

from typing import Any

import attrs

from lambdarun.config import positive

__all__ = ["DeployConfig", "RUNTIME_PROVIDED", "ARCHITECTURES", "DIRECT_UPLOAD_LIMIT", "UNZIPPED_LIMIT"]

#: Lambda's limit on a ZipFile sent in the CreateFunction/UpdateFunctionCode request
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
#: Lambda's limit on the unzipped function code plus all its layers
UNZIPPED_LIMIT = 250 * 1024 * 1024

ARCHITECTURES = ("x86_64", "arm64")

#: distributions the Lambda Python runtime already provides (not packaged by default)
RUNTIME_PROVIDED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
    "awslambdaric",
)


def _arch(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in ARCHITECTURES:
        raise ValueError(f"must be one of {', '.join(ARCHITECTURES)}", attribute)


def _python(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    major, dot, minor = value.partition(".")
    if value and not (major == "3" and dot and minor.isdigit()):
        raise ValueError("must look like '3.11' (or be empty: this interpreter's version)", attribute)


@attrs.define(kw_only=True)
class DeployConfig:
    """``[deploy]`` keys (every one optional)."""

    #: IAM execution role name ("" = "<function>-role"); an existing role is used as is
    role_name: str = ""
    #: bucket for spilled payloads and large code uploads ("" = the bucket of storage_url,
    #: else "lambdarun-<account>-<region>")
    bucket: str = ""
    #: key prefix inside the bucket that the function may use ("" = storage_url's prefix,
    #: else "lambdarun")
    prefix: str = ""
    #: name of the durable checkpoint table ("" = the table of [durable] store_url when it is
    #: dynamodb://); the durable plugin declares it with its key schema
    #: (lambdarun_deploy_resources), deploy refuses a name no plugin declares
    table: str = ""
    #: Python version of the function ("" = this interpreter's major.minor)
    python_version: str = attrs.field(default="", validator=_python)
    #: "x86_64" or "arm64"
    architecture: str = attrs.field(default="x86_64", validator=_arch)
    memory_size: int = attrs.field(default=1024, validator=positive)
    timeout: int = attrs.field(default=900, validator=positive)
    #: a pip requirements file of the user's dependencies
    requirements: str = ""
    #: user code (modules, packages or directories) copied to the root of the zip
    include: list[str] = attrs.field(factory=list)
    #: dependencies as a Lambda layer, code in the function zip
    layer: bool = False
    #: build cache ("" = ~/.cache/lambdarun/deploy)
    cache_dir: str = ""
    #: distributions not packaged because the Lambda runtime provides them
    exclude: list[str] = attrs.field(factory=lambda: list(RUNTIME_PROVIDED))
    #: largest zip sent inline; larger ones go through the bucket
    direct_upload_limit: int = attrs.field(default=DIRECT_UPLOAD_LIMIT, validator=positive)
    #: largest unzipped code + layers
    unzipped_limit: int = attrs.field(default=UNZIPPED_LIMIT, validator=positive)
