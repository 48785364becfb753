"""The ``DeployError`` family: everything ``lambdarun deploy``/``destroy`` raises on purpose.

Each message says what happened and what to do; errors raised while applying a plan also
say what was rolled back, so nothing half-created is left behind silently.
"""

from __future__ import annotations

from lambdarun.errors import LambdarunError

__all__ = [
    "DeployError",
    "DeployPermissionError",
    "BucketRegionError",
    "BucketUnavailableError",
    "PackageTooLargeError",
    "NoCompatibleWheelError",
    "DependencyInstallError",
    "FunctionNotManagedError",
    "UnsupportedOnTargetError",
    "ContributionError",
]


class DeployError(LambdarunError):
    """Deploying (or destroying) the lambdarun function failed."""

    def __init__(self, message: str, *, rolled_back: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back

    def __str__(self) -> str:
        text = super().__str__()
        if self.rolled_back:
            text += " Rolled back what this deploy had created: " + ", ".join(self.rolled_back) + "."
        return text


class DeployPermissionError(DeployError):
    """The deploying identity lacks an IAM permission (AccessDenied from the API).

    ``operation`` is the API operation that was refused (``CreateRole``), ``action`` the IAM
    action to grant (``iam:CreateRole``).
    """

    def __init__(self, message: str, *, operation: str, action: str, rolled_back: tuple[str, ...] = ()) -> None:
        super().__init__(message, rolled_back=rolled_back)
        self.operation = operation
        self.action = action


class BucketRegionError(DeployError):
    """The deployment bucket exists in another region than the function's."""


class BucketUnavailableError(DeployError):
    """The bucket name is taken by another account (or not readable by this one)."""


class PackageTooLargeError(DeployError):
    """The deployment package is over Lambda's unzipped size limit."""


class NoCompatibleWheelError(DeployError):
    """A requirement has no wheel for the function's platform (Lambda cannot build sdists)."""

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message)
        self.package = package


class DependencyInstallError(DeployError):
    """pip failed to fetch the requirements for another reason (its output is quoted)."""


class FunctionNotManagedError(DeployError):
    """A function with that name exists but was not created by ``lambdarun deploy``."""


class UnsupportedOnTargetError(DeployError):
    """The requested deploy mode is not available on this target (e.g. layers locally)."""


class ContributionError(DeployError):
    """A plugin's ``lambdarun_deploy_resources`` contribution is invalid (the message says
    which table, statement or variable, and why); nothing was created."""
