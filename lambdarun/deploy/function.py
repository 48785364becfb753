"""The Lambda function itself: its code (compared by ``CodeSha256``) and its configuration
(role, handler, runtime, memory, timeout, environment, layers)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lambdarun.deploy.base import ResourceHandler, Revert, code_location, short_hash
from lambdarun.deploy.errors import DeployError, FunctionNotManagedError
from lambdarun.deploy.layer import LAYER_DESCRIPTION
from lambdarun.deploy.plan import MANAGED_TAG, Action, Change, DeploySpec

if TYPE_CHECKING:
    from lambdarun.deploy.package import Archive

__all__ = ["FunctionHandler", "KEY_ID_VARIABLE", "ROLE_PROPAGATION_TIMEOUT"]

#: the function variable naming its key's id (not the key): a new key changes the function's
#: configuration, so Lambda starts fresh environments that read the new key
KEY_ID_VARIABLE = "LAMBDARUN_SIGNING_KEY_ID"
#: seconds to wait for a new IAM role to become assumable by Lambda (IAM is eventually consistent)
ROLE_PROPAGATION_TIMEOUT = 60.0


class FunctionHandler(ResourceHandler):
    kinds = ("function", "function-code", "function-configuration")
    service = "lambda"

    def state(self, spec: DeploySpec) -> dict[str, Any] | None:
        lam = self.client("lambda")
        try:
            return self.read(
                "GetFunction", "lambda:GetFunction", lambda: lam.get_function(FunctionName=spec.function_name)
            )
        except lam.exceptions.ResourceNotFoundException:
            return None

    def plan(self, spec: DeploySpec, code: Archive, *, role_arn: str, layers: list[str], key_id: str) -> list[Action]:
        actions: list[Action] = []
        current = self.state(spec)
        code_params: dict[str, Any] = {"archive": code}
        upload: Action | None = None
        if code.size > spec.direct_upload_limit:
            key = f"{spec.code_prefix}function-{short_hash(code.code_sha256)}.zip"
            upload = Action(Change.CREATE, "code-upload", f"s3://{spec.bucket}/{key}", f"zip over {spec.direct_upload_limit} bytes: via S3", {"archive": code, "key": key})
            code_params["key"] = key
        config = {
            "Role": role_arn,
            "Handler": spec.handler,
            "Runtime": spec.runtime,
            "Timeout": spec.timeout,
            "MemorySize": spec.memory_size,
            "Environment": {"Variables": {**spec.environment, KEY_ID_VARIABLE: key_id}},
            "Layers": layers,
        }
        if current is None:
            if upload:
                actions.append(upload)
            extra = ", " + ", ".join(sorted(spec.create_config)) if spec.create_config else ""
            actions.append(Action(Change.CREATE, "function", spec.function_name, f"{spec.runtime} {spec.architecture}{extra}",
                                  {**code_params, "config": {**config, **spec.create_config}}))
            return actions
        tags = current.get("Tags") or {}
        if not self.managed(tags, spec):
            raise FunctionNotManagedError(
                f"a Lambda function {spec.function_name!r} already exists on target "
                f"{self.target.name!r} and was not created by lambdarun deploy (it has no "
                f"{MANAGED_TAG} tag); deploy under another name (--function NAME) or delete it "
                "first. Nothing was changed."
            )
        cfg = current["Configuration"]
        arch = (cfg.get("Architectures") or ["x86_64"])[0]
        if cfg.get("CodeSha256") != code.code_sha256 or arch != spec.architecture:
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
        return actions

    def plan_destroy(self, spec: DeploySpec) -> list[Action]:
        current = self.state(spec)
        if current is None:
            return []
        if self.managed(current.get("Tags"), spec):
            return [Action(Change.DELETE, "function", spec.function_name)]
        return [Action(Change.NOOP, "function", spec.function_name, "not created by deploy: kept")]

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

    def create_function(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
        lam = self.client("lambda")
        kwargs = dict(
            FunctionName=spec.function_name,
            Code=code_location(spec, action.params),
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

    def update_function_code(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        lam = self.client("lambda")
        lam.update_function_code(FunctionName=spec.function_name, Architectures=[spec.architecture], **code_location(spec, action.params))
        self._wait("function_updated_v2", spec.function_name)

    def update_function_configuration(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        lam = self.client("lambda")
        lam.update_function_configuration(FunctionName=spec.function_name, **self._config(action, state))
        self._wait("function_updated_v2", spec.function_name)

    def delete_function(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self.client("lambda").delete_function(FunctionName=spec.function_name)
