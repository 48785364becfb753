"""Planning and applying deployments with boto3, through a lambdarun target's clients.

:class:`Deployer` is the orchestrator: it asks each resource kind (one module each:
:mod:`~lambdarun.deploy.bucket`, :mod:`~lambdarun.deploy.table`,
:mod:`~lambdarun.deploy.secret`, :mod:`~lambdarun.deploy.role`,
:mod:`~lambdarun.deploy.layer`, :mod:`~lambdarun.deploy.function`) for its actions, in
order, and turns a :class:`~lambdarun.deploy.plan.DeploySpec` plus a built package into a
:class:`~lambdarun.deploy.plan.DeployPlan`; :meth:`Deployer.apply` executes it. Everything
created is tagged (``lambdarun:managed-by``, ``lambdarun:function``); layer versions carry
``lambdarun deploy`` in their description and code zips live under
``<prefix>/deploy/<function>/``. ``destroy`` deletes exactly those, and nothing else.

When a step fails, what this apply had created so far is deleted again (in reverse order)
before the error is raised, so a denied permission never leaves a half-created deployment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.deploy.base import ACCESS_DENIED, ResourceHandler, Revert, client_error, error_code
from lambdarun.deploy.bucket import BucketHandler
from lambdarun.deploy.errors import BucketUnavailableError, DeployError, DeployPermissionError
from lambdarun.deploy.function import KEY_ID_VARIABLE, ROLE_PROPAGATION_TIMEOUT, FunctionHandler
from lambdarun.deploy.layer import LAYER_DESCRIPTION, LayerHandler
from lambdarun.deploy.plan import Action, ApplyResult, Change, DeployPlan, DeploySpec
from lambdarun.deploy.role import RoleHandler
from lambdarun.deploy.secret import SecretHandler
from lambdarun.deploy.spec import default_secret_name, function_environment, resolve_spec
from lambdarun.deploy.extra_role import ExtraRoleHandler
from lambdarun.deploy.table import TableHandler

if TYPE_CHECKING:
    from lambdarun.deploy.package import BuiltPackage
    from lambdarun.types import Target

__all__ = [
    "Deployer",
    "resolve_spec",
    "function_environment",
    "default_secret_name",
    "LAYER_DESCRIPTION",
    "KEY_ID_VARIABLE",
    "ROLE_PROPAGATION_TIMEOUT",
]

log = structlog.get_logger(__name__)


class Deployer:
    """Plans and applies deployments on one target (``session.target``).

    :param target: a :class:`lambdarun.types.Target`; only its boto3 clients are used
        (``lambda``, ``iam``, ``s3``, ``dynamodb``, ``secretsmanager``, ``sts``).
    :param echo: called with one line per step while applying (the CLI prints them).
    """

    def __init__(self, target: Target, *, echo: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.echo = echo or (lambda line: None)
        self._ClientError = client_error()
        self.bucket = BucketHandler(target, self.echo)
        self.table = TableHandler(target, self.echo)
        self.secret = SecretHandler(target, self.echo)
        self.role = RoleHandler(target, self.echo)
        self.layer = LayerHandler(target, self.echo)
        self.function = FunctionHandler(target, self.echo)
        self.extra_roles = ExtraRoleHandler(target, self.echo)
        self._handlers: dict[str, ResourceHandler] = {
            kind: handler
            for handler in (self.bucket, self.table, self.secret, self.role, self.layer, self.function,
                            self.extra_roles)
            for kind in handler.kinds
        }

    def client(self, service: str) -> Any:
        return self.target.client(service)

    # --- planning -------------------------------------------------------------------

    def policy(self, spec: DeploySpec) -> dict[str, Any]:
        """The execution role's inline policy for ``spec``."""
        return self.role.policy(spec)

    def preflight(self, spec: DeploySpec) -> None:
        """Cheap checks worth failing on before a package is built (no writes)."""
        self.layer.check_target(spec)
        self.bucket.state(spec)

    def plan(self, spec: DeploySpec, package: BuiltPackage) -> DeployPlan:
        """Compare the wanted state with what exists; no writes."""
        self.layer.check_target(spec)
        actions: list[Action] = []
        actions += self.bucket.plan(spec)
        actions += self.table.plan(spec)
        secret_action, kid = self.secret.plan(spec)
        actions.append(secret_action)
        role_actions, role_arn = self.role.plan(spec)
        actions += role_actions
        layer_actions, layers = self.layer.plan(spec, package.layer)
        actions += layer_actions
        actions += self.function.plan(spec, package.function, role_arn=role_arn, layers=layers, key_id=kid)
        actions += self.extra_roles.plan(spec)
        return DeployPlan("deploy", self.target.name, spec, tuple(actions), package)

    def plan_destroy(self, spec: DeploySpec) -> DeployPlan:
        """What ``destroy`` deletes: only resources tagged as created by this deployment."""
        actions: list[Action] = []
        actions += self.extra_roles.plan_destroy(spec)
        actions += self.function.plan_destroy(spec)
        actions += self.layer.plan_destroy(spec)
        actions += self.secret.plan_destroy(spec)
        actions += self.role.plan_destroy(spec)
        actions += self.table.plan_destroy(spec)
        actions += self.bucket.plan_destroy(spec)
        return DeployPlan("destroy", self.target.name, spec, tuple(actions))

    # --- applying -------------------------------------------------------------------

    def apply(self, plan: DeployPlan) -> ApplyResult:
        """Execute ``plan``; on failure delete what this call created, then raise."""
        done: list[Action] = []
        undo: list[tuple[str, Revert]] = []
        state: dict[str, Any] = {"layers": []}
        for action in plan.actions:
            if action.change is Change.NOOP:
                if action.kind == "layer":
                    state["layers"].append(action.name)
                continue
            self.echo(f"{action.change.value} {action.kind} {action.name} ...")
            try:
                revert = self._handlers[action.kind].step(action)(plan.spec, action, state)
            except Exception as exc:
                rolled_back = self._rollback(undo)
                raise self._failure(plan, action, exc, rolled_back) from exc
            if revert is not None:
                undo.append((f"{action.kind} {action.name}", revert))
            done.append(action)
        return ApplyResult(plan, tuple(done))

    def _rollback(self, undo: list[tuple[str, Revert]]) -> tuple[str, ...]:
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
            code = error_code(exc)
            operation = getattr(exc, "operation_name", "") or action.kind
            if code in ("BucketAlreadyExists",):
                return BucketUnavailableError(
                    f"the bucket name {plan.spec.bucket!r} is taken by another account (bucket names "
                    "are global); choose another with [deploy] bucket or storage_url and deploy again.",
                    rolled_back=rolled_back,
                )
            if code in ACCESS_DENIED:
                handler = self._handlers.get(action.kind)
                iam_action = f"{handler.service if handler else 'aws'}:{operation}"
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
