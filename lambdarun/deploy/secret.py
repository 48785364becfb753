"""The Secrets Manager secret holding the function's envelope signing key.

An existing key is never replaced unless ``--rotate-key``; a secret deploy did not create
is used as is and never written or deleted.
"""

from __future__ import annotations

from typing import Any

from lambdarun.deploy.base import ResourceHandler, Revert
from lambdarun.deploy.errors import DeployError
from lambdarun.deploy.plan import Action, Change, DeploySpec
from lambdarun.signing import check_key, generate_key, key_id

__all__ = ["SecretHandler"]


class SecretHandler(ResourceHandler):
    kinds = ("secret",)
    service = "secretsmanager"

    def state(self, spec: DeploySpec) -> tuple[dict[str, Any] | None, bool]:
        """(description, managed) of the signing key secret; (None, False) when missing."""
        sm = self.client("secretsmanager")
        try:
            desc = self.read(
                "DescribeSecret", "secretsmanager:DescribeSecret",
                lambda: sm.describe_secret(SecretId=spec.signing_secret),
            )
        except sm.exceptions.ResourceNotFoundException:
            return None, False
        tags = {t["Key"]: t["Value"] for t in desc.get("Tags") or []}
        return desc, self.managed(tags, spec)

    def key(self, spec: DeploySpec) -> bytes:
        sm = self.client("secretsmanager")
        value = self.read(
            "GetSecretValue", "secretsmanager:GetSecretValue",
            lambda: sm.get_secret_value(SecretId=spec.signing_secret),
        )
        return check_key(value.get("SecretString") or value.get("SecretBinary"), f"secret {spec.signing_secret!r}")

    def plan(self, spec: DeploySpec) -> tuple[Action, str]:
        """The signing key secret's action and the id of the key the function will use."""
        desc, managed = self.state(spec)
        wanted = spec.signing_key
        if desc is None:
            key = wanted or generate_key()
            what = "the configured signing_key" if wanted else "a new 256-bit signing key"
            return Action(Change.CREATE, "secret", spec.signing_secret, what, {"key": key}), key_id(key.encode())
        current = self.key(spec)
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

    def plan_destroy(self, spec: DeploySpec) -> list[Action]:
        if not spec.signing_secret:
            return []
        desc, managed = self.state(spec)
        if desc is None:
            return []
        return [
            Action(Change.DELETE, "secret", spec.signing_secret, "the function's signing key")
            if managed
            else Action(Change.NOOP, "secret", spec.signing_secret, "not created by deploy: kept")
        ]

    def create_secret(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
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

    def update_secret(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("secretsmanager").put_secret_value(SecretId=spec.signing_secret, SecretString=action.params["key"])

    def delete_secret(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        # no recovery window: deploy can create the same name again right away
        self.client("secretsmanager").delete_secret(SecretId=spec.signing_secret, ForceDeleteWithoutRecovery=True)
