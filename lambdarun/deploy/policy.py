"""IAM documents of the execution role: trust Lambda, grant only what lambdarun uses.

The inline policy grants exactly these things:

* objects under the lambdarun prefix of the bucket (get/put/delete), and listing that
  prefix only (``s3:prefix`` condition): the storage is always S3 on a deployed function
  (see docs/deploy.md, "Storage is S3");
* items of each table a plugin contributed (and its indexes), e.g. the durable checkpoint
  table, with the actions that table declares;
* CloudWatch Logs for the function's own log group;
* ``secretsmanager:GetSecretValue`` on the one secret holding the envelope signing key;
* the statements plugins contributed (``lambdarun_deploy_resources``), e.g. the covalent
  backend's ``lambda:InvokeFunction`` on the function itself (its own on-failure
  destination, :mod:`lambdarun_covalent.deploy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lambdarun.deploy.contributions import DYNAMODB_ITEM_ACTIONS
from lambdarun.deploy.errors import ContributionError

if TYPE_CHECKING:
    from lambdarun.deploy.contributions import PolicyStatement, TableResource

__all__ = ["trust_policy", "execution_policy", "partition_of", "secret_arn", "POLICY_NAME"]

POLICY_NAME = "lambdarun-execution"

S3_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
DYNAMODB_ACTIONS = list(DYNAMODB_ITEM_ACTIONS)
LOG_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"]


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def secret_arn(secret: str, *, region: str, account: str) -> str:
    """The ARN of the secret ``secret`` (a name or an ARN). Secrets Manager appends six
    random characters to a secret's name in its ARN: ``NAME-??????`` matches exactly that
    secret (and no other name)."""
    if secret.startswith("arn:"):
        return secret
    return f"arn:{partition_of(region)}:secretsmanager:{region}:{account}:secret:{secret}-??????"


def trust_policy() -> dict[str, Any]:
    """Only the Lambda service may assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def execution_policy(
    *,
    function_name: str,
    region: str,
    account: str,
    bucket: str,
    prefix: str,
    table: str | None = None,
    signing_secret: str | None = None,
    tables: Sequence[TableResource] = (),
    statements: Sequence[PolicyStatement] = (),
) -> dict[str, Any]:
    """The role's inline policy for ``function_name`` (see the module docstring).

    ``table`` names one table granted the default item actions (Sid
    ``LambdarunDurableTable``); ``tables`` and ``statements`` are the plugins' contributions.
    """
    part = partition_of(region)
    prefix = prefix.strip("/")
    log_group = f"arn:{part}:logs:{region}:{account}:log-group:/aws/lambda/{function_name}"
    doc: list[dict[str, Any]] = [
        {
            "Sid": "LambdarunObjects",
            "Effect": "Allow",
            "Action": list(S3_OBJECT_ACTIONS),
            "Resource": f"arn:{part}:s3:::{bucket}/{prefix}/*",
        },
        {
            "Sid": "LambdarunListPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:{part}:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
        },
    ]
    granted = [(table, "LambdarunDurableTable", tuple(DYNAMODB_ACTIONS))] if table else []
    granted += [(t.name, t.sid or f"LambdarunTable{i}", t.actions) for i, t in enumerate(tables, 1)]
    for name, sid, actions in granted:
        table_arn = f"arn:{part}:dynamodb:{region}:{account}:table/{name}"
        doc.append(
            {
                "Sid": sid,
                "Effect": "Allow",
                "Action": list(actions),
                "Resource": [table_arn, f"{table_arn}/index/*"],
            }
        )
    if signing_secret:
        doc.append(
            {
                "Sid": "LambdarunSigningKey",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": secret_arn(signing_secret, region=region, account=account),
            }
        )
    doc += [
        {
            "Sid": "LambdarunLogGroup",
            "Effect": "Allow",
            "Action": "logs:CreateLogGroup",
            "Resource": f"{log_group}:*",
        },
        {
            "Sid": "LambdarunLogStreams",
            "Effect": "Allow",
            "Action": list(LOG_ACTIONS),
            "Resource": f"{log_group}:log-stream:*",
        },
    ]
    doc += [s.render(partition=part, region=region, account=account, function=function_name) for s in statements]
    sids = [s["Sid"] for s in doc]
    if len(sids) != len(set(sids)):
        raise ContributionError(
            f"the execution policy would have duplicate statement ids {sorted({s for s in sids if sids.count(s) > 1})}: "
            "give the contributed tables and statements sids of their own"
        )
    return {"Version": "2012-10-17", "Statement": doc}
