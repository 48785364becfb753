"""IAM documents of the execution role: trust Lambda, grant only what lambdarun uses.

The inline policy grants exactly four things:

* objects under the lambdarun prefix of the bucket (get/put/delete), and listing that
  prefix only (``s3:prefix`` condition);
* items of the durable table (and its indexes), when there is one;
* CloudWatch Logs for the function's own log group;
* ``secretsmanager:GetSecretValue`` on the one secret holding the envelope signing key.
* ``lambda:InvokeFunction`` on the function itself, and nothing else: an asynchronous
  (``Event``) call whose environment dies reaches its caller because the function is its
  own on-failure destination, and Lambda delivers to a destination with the function's role.
"""

from __future__ import annotations

from typing import Any

__all__ = ["trust_policy", "execution_policy", "partition_of", "secret_arn", "POLICY_NAME"]

POLICY_NAME = "lambdarun-execution"

S3_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
DYNAMODB_ACTIONS = [
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:TransactWriteItems",
    "dynamodb:TransactGetItems",
]
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
    table: str | None,
    signing_secret: str | None = None,
) -> dict[str, Any]:
    """The role's inline policy for ``function_name`` (see the module docstring)."""
    part = partition_of(region)
    prefix = prefix.strip("/")
    log_group = f"arn:{part}:logs:{region}:{account}:log-group:/aws/lambda/{function_name}"
    statements: list[dict[str, Any]] = [
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
    if table:
        table_arn = f"arn:{part}:dynamodb:{region}:{account}:table/{table}"
        statements.append(
            {
                "Sid": "LambdarunDurableTable",
                "Effect": "Allow",
                "Action": list(DYNAMODB_ACTIONS),
                "Resource": [table_arn, f"{table_arn}/index/*"],
            }
        )
    if signing_secret:
        statements.append(
            {
                "Sid": "LambdarunSigningKey",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": secret_arn(signing_secret, region=region, account=account),
            }
        )
    statements.append(
        {
            "Sid": "LambdarunSelfDestination",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": f"arn:{part}:lambda:{region}:{account}:function:{function_name}",
        }
    )
    statements += [
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
    return {"Version": "2012-10-17", "Statement": statements}
