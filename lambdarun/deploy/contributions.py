"""What plugins contribute to a deployment (hook ``lambdarun_deploy_resources``).

A plugin that needs more than the function, its role, its bucket and its signing key
declares it here instead of deploy knowing about it: DynamoDB tables with their key
schema (the durable plugin's checkpoint table), policy statements for the execution role,
and environment variables of the function::

    from lambdarun import hookimpl
    from lambdarun.deploy.contributions import KeyAttribute, PolicyStatement, TableResource

    @hookimpl
    def lambdarun_deploy_resources(settings, register):
        register.add_table(TableResource("my-table", keys=(KeyAttribute("id", "S", "HASH"),)))
        register.add_statement(PolicyStatement(
            sid="MyQueue", actions=("sqs:SendMessage",),
            resources=("arn:{partition}:sqs:{region}:{account}:my-queue",),
        ))
        register.add_environment("MY_PLUGIN_MODE", "fast")

Contributions are checked when they are added (:class:`ContributionError`): tables need a
valid name and key schema, statements grant named actions (no ``*``) on named resources,
and environment variables never replace the ones deploy sets itself.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.deploy.errors import ContributionError

if TYPE_CHECKING:
    from lambdarun.config import Settings

__all__ = [
    "RoleResource",
    "KeyAttribute",
    "TableResource",
    "PolicyStatement",
    "DeployResources",
    "ContributionError",
    "collect_resources",
    "RESERVED_VARIABLES",
    "DYNAMODB_ITEM_ACTIONS",
]

#: the item-level actions a table's statement grants unless the table names its own
DYNAMODB_ITEM_ACTIONS = (
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
)
#: variables deploy sets itself; a contribution may not replace them (a plugin cannot point
#: the function at another target, bucket, function or signing key)
RESERVED_VARIABLES = frozenset(
    {
        "LAMBDARUN_TARGET",
        "LAMBDARUN_REGION",
        "LAMBDARUN_STORAGE_URL",
        "LAMBDARUN_FUNCTION_NAME",
        "LAMBDARUN_SIGNING_KEY",
        "LAMBDARUN_SIGNING_KEY_SECRET",
        "LAMBDARUN_SIGNING_KEY_ID",
    }
)
#: Lambda reserves these (its docs: "Defined runtime environment variables")
_LAMBDA_RESERVED = re.compile(r"^(AWS_.*|_HANDLER|_X_AMZN_TRACE_ID|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR|TZ)$")
_VARIABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_SID = re.compile(r"^[A-Za-z0-9]+$")
_ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9]+$")
_PLACEHOLDERS = ("partition", "region", "account", "function")


@attrs.frozen
class KeyAttribute:
    """One attribute of a table's primary key: name, type (``S``, ``N``, ``B``) and role
    (``HASH`` or ``RANGE``)."""

    name: str
    type: str = "S"
    key_type: str = "HASH"

    def __attrs_post_init__(self) -> None:
        if not self.name or len(self.name) > 255:
            raise ContributionError(f"key attribute name {self.name!r} must have 1 to 255 characters")
        if self.type not in ("S", "N", "B"):
            raise ContributionError(f"key attribute {self.name!r}: type must be 'S', 'N' or 'B', not {self.type!r}")
        if self.key_type not in ("HASH", "RANGE"):
            raise ContributionError(f"key attribute {self.name!r}: key_type must be 'HASH' or 'RANGE', not {self.key_type!r}")


@attrs.frozen
class TableResource:
    """A DynamoDB table the function needs: created on demand (``PAY_PER_REQUEST``) when
    missing, tagged like everything deploy creates, granted to the role (``actions`` on the
    table and its indexes), deleted by destroy when deploy created it.

    :param name: the table name.
    :param keys: the primary key: one ``HASH`` attribute, optionally then one ``RANGE``.
    :param purpose: shown in the plan (``create table NAME (purpose)``).
    :param sid: the ``Sid`` of its policy statement ("" = ``LambdarunTable<n>``).
    :param actions: what the role may do on the table.
    """

    name: str
    keys: tuple[KeyAttribute, ...] = attrs.field(converter=tuple)
    purpose: str = ""
    sid: str = ""
    actions: tuple[str, ...] = attrs.field(default=DYNAMODB_ITEM_ACTIONS, converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not _TABLE_NAME.match(self.name or ""):
            raise ContributionError(
                f"table name {self.name!r} is not a DynamoDB table name (3-255 characters of a-z, A-Z, 0-9, _ . -)"
            )
        roles = [k.key_type for k in self.keys]
        if roles not in (["HASH"], ["HASH", "RANGE"]):
            raise ContributionError(
                f"table {self.name!r}: the key must be one HASH attribute, optionally followed by one RANGE attribute"
            )
        if self.sid and not _SID.match(self.sid):
            raise ContributionError(f"table {self.name!r}: sid {self.sid!r} must be alphanumeric")
        _check_actions(self.actions, f"table {self.name!r}", prefix="dynamodb:")

    def create_request(self) -> dict[str, Any]:
        """``CreateTable`` parameters (without tags)."""
        return {
            "TableName": self.name,
            "AttributeDefinitions": [{"AttributeName": k.name, "AttributeType": k.type} for k in self.keys],
            "KeySchema": [{"AttributeName": k.name, "KeyType": k.key_type} for k in self.keys],
            "BillingMode": "PAY_PER_REQUEST",
        }

    def describe(self) -> str:
        keys = ", ".join(k.name for k in self.keys)
        return f"{self.purpose + ' ' if self.purpose else ''}({keys}), on demand"


@attrs.frozen
class PolicyStatement:
    """An ``Allow`` statement added to the execution role's inline policy.

    ``resources`` may use ``{partition}``, ``{region}``, ``{account}`` and ``{function}``,
    filled in at deploy time (the account comes from STS).
    """

    sid: str
    actions: tuple[str, ...] = attrs.field(converter=tuple)
    resources: tuple[str, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not _SID.match(self.sid or ""):
            raise ContributionError(f"policy statement sid {self.sid!r} must be alphanumeric and not empty")
        _check_actions(self.actions, f"statement {self.sid!r}")
        if not self.resources:
            raise ContributionError(f"statement {self.sid!r} names no resource")
        for resource in self.resources:
            if not isinstance(resource, str) or not resource.startswith("arn:") or resource.rstrip("*:/") in ("arn", ""):
                raise ContributionError(
                    f"statement {self.sid!r}: resource {resource!r} must be an ARN (least privilege: no '*')"
                )
            try:
                parts = [(field, spec, conv) for _, field, spec, conv in string.Formatter().parse(resource)]
            except ValueError as exc:
                raise ContributionError(f"statement {self.sid!r}: resource {resource!r}: {exc}") from exc
            unknown = [
                field for field, spec, conv in parts if field is not None and (field not in _PLACEHOLDERS or spec or conv)
            ]
            if unknown:
                raise ContributionError(
                    f"statement {self.sid!r}: resource {resource!r} uses {unknown}; the only placeholders are "
                    + ", ".join("{" + p + "}" for p in _PLACEHOLDERS)
                )

    def render(self, *, partition: str, region: str, account: str, function: str) -> dict[str, Any]:
        values = {"partition": partition, "region": region, "account": account, "function": function}
        resources = [r.format(**values) for r in self.resources]  # placeholders checked when built
        return {
            "Sid": self.sid,
            "Effect": "Allow",
            "Action": list(self.actions) if len(self.actions) > 1 else self.actions[0],
            "Resource": resources if len(resources) > 1 else resources[0],
        }


_ROLE_NAME = re.compile(r"^[A-Za-z0-9+=,.@_{}-]{1,64}$")
_PRINCIPAL = re.compile(r"^(\d{12}|arn:aws[a-z-]*:(iam|sts)::\d{12}:(root|role/[A-Za-z0-9+=,.@_/-]+|user/[A-Za-z0-9+=,.@_/-]+))$")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9+=,.@:/_-]{2,1224}$")


@attrs.frozen
class RoleResource:
    """Another IAM role deploy creates for a plugin: one that a third party assumes to act on
    the function (e.g. the Temporal server invoking a worker function), never the execution
    role. Its trust policy lets ``principal`` (an account id or an IAM role/user ARN) assume
    it **only with** ``external_id`` (``sts:ExternalId``); its inline policy is
    ``statements`` (placeholders as in :class:`PolicyStatement`). Tagged like everything
    deploy creates, updated when it differs, deleted by destroy when deploy created it.

    :param name: the role name; may use ``{function}``.
    :param principal: who may assume it.
    :param external_id: the External ID it requires (2-1224 characters).
    :param statements: what it may do (least privilege: ARNs, no ``*``).
    :param purpose: shown in the plan.
    :param note: shown after the plan/deploy; may use ``{role_arn}``, ``{function_arn}``,
        ``{external_id}``, ``{function}``, ``{account}``, ``{region}``, ``{partition}``.
    """

    name: str
    principal: str
    external_id: str = attrs.field(repr=False)
    statements: tuple[PolicyStatement, ...] = attrs.field(converter=tuple)
    purpose: str = ""
    note: str = ""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _ROLE_NAME.match(self.name):
            raise ContributionError(f"role name {self.name!r} is not an IAM role name (1-64 of A-Z a-z 0-9 +=,.@_-)")
        if not isinstance(self.principal, str) or not _PRINCIPAL.match(self.principal):
            raise ContributionError(
                f"role {self.name!r}: principal {self.principal!r} must be an account id or an IAM "
                "root/role/user ARN (never '*')")
        if not isinstance(self.external_id, str) or not _EXTERNAL_ID.match(self.external_id):
            raise ContributionError(
                f"role {self.name!r}: the External ID must be 2-1224 characters of A-Z a-z 0-9 +=,.@:/_-")
        if not self.statements or not all(isinstance(s, PolicyStatement) for s in self.statements):
            raise ContributionError(f"role {self.name!r} needs at least one PolicyStatement")

    def trust_policy(self) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": self.principal}, "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": self.external_id}}}]}

    def policy(self, *, partition: str, region: str, account: str, function: str) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": [
            s.render(partition=partition, region=region, account=account, function=function) for s in self.statements]}


def _check_actions(actions: tuple[str, ...], what: str, *, prefix: str = "") -> None:
    if not actions:
        raise ContributionError(f"{what} grants no action")
    for action in actions:
        if not isinstance(action, str) or not _ACTION.match(action) or (prefix and not action.startswith(prefix)):
            raise ContributionError(
                f"{what}: action {action!r} must name one {prefix or 'service:'}Action (least privilege: no '*')"
            )


#: the CreateFunction members a plugin may set (``DeployResources.set_function_config``)
FUNCTION_CONFIG_KEYS = ("DurableConfig",)


@attrs.define
class DeployResources:
    """What the registered plugins contribute; filled by ``lambdarun_deploy_resources``."""

    tables: list[TableResource] = attrs.field(factory=list)
    statements: list[PolicyStatement] = attrs.field(factory=list)
    environment: dict[str, str] = attrs.field(factory=dict)
    roles: list[RoleResource] = attrs.field(factory=list)

    def add_role(self, role: RoleResource) -> None:
        """Declare another role (see :class:`RoleResource`); names must be unique."""
        if not isinstance(role, RoleResource):
            raise ContributionError(f"add_role() takes a RoleResource, not {type(role).__name__}")
        if any(r.name == role.name for r in self.roles):
            raise ContributionError(f"the role {role.name!r} is declared twice")
        self.roles.append(role)
    #: per backend id: settings of the function created when that backend is the default one
    #: (only ``DurableConfig``, which AWS takes only when a function is created)
    function_config: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def set_function_config(self, backend: str, key: str, value: Any) -> None:
        """Create the function with ``key = value`` when ``backend`` is the deployed (default)
        backend; only ``DurableConfig`` for now."""
        if key not in FUNCTION_CONFIG_KEYS:
            raise ContributionError(f"function setting {key!r} cannot be contributed; only {FUNCTION_CONFIG_KEYS}")
        current = self.function_config.setdefault(backend, {})
        if current.get(key, value) != value:
            raise ContributionError(f"function setting {key!r} of backend {backend!r} is contributed twice with different values")
        current[key] = value

    def add_table(self, table: TableResource) -> None:
        """Declare a table; the same table declared twice must have the same key."""
        if not isinstance(table, TableResource):
            raise ContributionError(f"add_table() takes a TableResource, not {type(table).__name__}")
        for known in self.tables:
            if known.name == table.name:
                if known.keys != table.keys:
                    raise ContributionError(
                        f"table {table.name!r} is declared twice with different keys "
                        f"({known.describe()} and {table.describe()}): give one of them another name"
                    )
                return
        self.tables.append(table)

    def add_statement(self, statement: PolicyStatement) -> None:
        if not isinstance(statement, PolicyStatement):
            raise ContributionError(f"add_statement() takes a PolicyStatement, not {type(statement).__name__}")
        if any(s.sid == statement.sid for s in self.statements):
            raise ContributionError(f"two policy statements have the sid {statement.sid!r}: sids must be unique")
        self.statements.append(statement)

    def add_environment(self, name: str, value: str) -> None:
        if not isinstance(name, str) or not _VARIABLE.match(name):
            raise ContributionError(f"environment variable name {name!r} must match [A-Za-z][A-Za-z0-9_]*")
        if name in RESERVED_VARIABLES or _LAMBDA_RESERVED.match(name):
            raise ContributionError(f"environment variable {name!r} is set by deploy or Lambda itself; use another name")
        if not isinstance(value, str):
            raise ContributionError(f"environment variable {name!r} must be a str, not {type(value).__name__}")
        if self.environment.get(name, value) != value:
            raise ContributionError(f"environment variable {name!r} is contributed twice with different values")
        self.environment[name] = value


def collect_resources(pm: Any, settings: Settings) -> DeployResources:
    """Ask every registered plugin (``lambdarun_deploy_resources``) what it needs deployed."""
    register = DeployResources()
    pm.hook.lambdarun_deploy_resources(settings=settings, register=register)
    return register
