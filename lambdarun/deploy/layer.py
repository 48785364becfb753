"""The dependencies layer (``<function>-deps``, ``--layer``): versions are found again by
their description ``lambdarun deploy <CodeSha256>``, so unchanged dependencies publish nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambdarun.deploy.base import ResourceHandler, Revert, code_location, short_hash
from lambdarun.deploy.errors import UnsupportedOnTargetError
from lambdarun.deploy.plan import Action, Change, DeploySpec

if TYPE_CHECKING:
    from lambdarun.deploy.package import Archive

__all__ = ["LayerHandler", "LAYER_DESCRIPTION"]

LAYER_DESCRIPTION = "lambdarun deploy"


class LayerHandler(ResourceHandler):
    kinds = ("layer",)
    service = "lambda"

    def check_target(self, spec: DeploySpec) -> None:
        if spec.layer and self.target.name == "local":
            raise UnsupportedOnTargetError(
                "the local target does not run Lambda layers; deploy without --layer there "
                "(the same zip then holds code and dependencies), or use --target aws"
            )

    def versions(self, spec: DeploySpec) -> list[dict[str, Any]]:
        lam = self.client("lambda")
        if self.target.name == "local":
            return []  # the local Lambda service has no layers
        try:
            pages = lam.get_paginator("list_layer_versions").paginate(LayerName=spec.layer_name)
            return [v for page in pages for v in page.get("LayerVersions", [])]
        except lam.exceptions.ResourceNotFoundException:
            return []

    def existing(self, spec: DeploySpec, code_sha256: str) -> str | None:
        description = f"{LAYER_DESCRIPTION} {code_sha256}"
        for version in self.versions(spec):
            if version.get("Description") == description:
                return str(version["LayerVersionArn"])
        return None

    def plan(self, spec: DeploySpec, layer: Archive | None) -> tuple[list[Action], list[str]]:
        """The layer's actions (with an upload through the bucket when it is large) and
        the layer ARNs the function will use."""
        if layer is None:
            return [], []
        arn = self.existing(spec, layer.code_sha256)
        if arn:
            return [Action(Change.NOOP, "layer", arn, "same dependencies already published")], [arn]
        actions: list[Action] = []
        params: dict[str, Any] = {"archive": layer}
        if layer.size > spec.direct_upload_limit:
            key = f"{spec.code_prefix}layer-{short_hash(layer.code_sha256)}.zip"
            actions.append(Action(Change.CREATE, "code-upload", f"s3://{spec.bucket}/{key}", f"layer zip over {spec.direct_upload_limit} bytes", {"archive": layer, "key": key}))
            params["key"] = key
        actions.append(Action(Change.CREATE, "layer", spec.layer_name, "dependencies changed" if self.versions(spec) else "first version", params))
        return actions, ["<new layer version>"]

    def plan_destroy(self, spec: DeploySpec) -> list[Action]:
        return [
            Action(Change.DELETE, "layer", version["LayerVersionArn"], params={"version": version["Version"]})
            for version in self.versions(spec)
            if str(version.get("Description", "")).startswith(LAYER_DESCRIPTION)
        ]

    def create_layer(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
        lam = self.client("lambda")
        archive = action.params["archive"]
        resp = lam.publish_layer_version(
            LayerName=spec.layer_name,
            Description=f"{LAYER_DESCRIPTION} {archive.code_sha256}",
            Content=code_location(spec, action.params),
            CompatibleRuntimes=[spec.runtime],
            CompatibleArchitectures=[spec.architecture],
        )
        state["layers"].append(resp["LayerVersionArn"])

        def revert() -> None:
            lam.delete_layer_version(LayerName=spec.layer_name, VersionNumber=resp["Version"])

        return revert

    def delete_layer(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("lambda").delete_layer_version(LayerName=spec.layer_name, VersionNumber=action.params["version"])
