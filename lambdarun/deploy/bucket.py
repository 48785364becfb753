"""The S3 bucket of a deployment (payloads and large code uploads) and the objects deploy put in it."""

from __future__ import annotations

from typing import Any

from lambdarun.deploy.base import ACCESS_DENIED, ResourceHandler, Revert, error_code, http_status
from lambdarun.deploy.errors import BucketRegionError, BucketUnavailableError
from lambdarun.deploy.plan import Action, Change, DeploySpec

__all__ = ["BucketHandler"]


class BucketHandler(ResourceHandler):
    kinds = ("bucket", "objects", "code-upload")
    service = "s3"

    # --- reading --------------------------------------------------------------------

    def state(self, spec: DeploySpec) -> tuple[bool, bool]:
        """(exists, managed) of the bucket; raise when it is unusable."""
        s3 = self.client("s3")
        try:
            resp = s3.head_bucket(Bucket=spec.bucket)
        except self.ClientError as exc:
            status, code = http_status(exc), error_code(exc)
            if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
                return False, False
            if status == 301:
                region = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
                raise self._region_error(spec, region) from exc
            if status == 403 or code in ACCESS_DENIED or code == "403":
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
            raise self._region_error(spec, region)
        try:
            tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=spec.bucket)["TagSet"]}
        except self.ClientError:
            tags = {}
        return True, self.managed(tags, spec)

    def _region_error(self, spec: DeploySpec, region: str | None) -> BucketRegionError:
        return BucketRegionError(
            f"bucket {spec.bucket!r} is in region {region or 'another region'}, but the function "
            f"deploys to {spec.region}; Lambda fetches code and the function stores payloads in "
            f"its own region. Use a bucket in {spec.region} ([deploy] bucket or storage_url) or "
            f"set region = {region!r}. Nothing was created."
        )

    def keys(self, bucket: str, prefix: str) -> list[str]:
        s3 = self.client("s3")
        return [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    # --- planning -------------------------------------------------------------------

    def plan(self, spec: DeploySpec) -> list[Action]:
        exists, managed = self.state(spec)
        if exists:
            return [Action(Change.NOOP, "bucket", spec.bucket, "exists" + ("" if managed else "; not created by deploy, kept by destroy"))]
        return [Action(Change.CREATE, "bucket", spec.bucket, f"in {spec.region}")]

    def plan_destroy(self, spec: DeploySpec) -> list[Action]:
        try:
            exists, managed = self.state(spec)
        except BucketRegionError:
            exists, managed = False, False
        if not exists:
            return []
        actions: list[Action] = []
        prefix = f"{spec.prefix}/" if managed else spec.code_prefix
        keys = self.keys(spec.bucket, prefix)
        if keys:
            actions.append(Action(Change.DELETE, "objects", f"s3://{spec.bucket}/{prefix}", f"{len(keys)} object(s)", {"keys": keys}))
        if managed:
            actions.append(Action(Change.DELETE, "bucket", spec.bucket, "if nothing outside the lambdarun prefix remains"))
        else:
            actions.append(Action(Change.NOOP, "bucket", spec.bucket, "not created by deploy: kept"))
        return actions

    # --- applying -------------------------------------------------------------------

    def create_bucket(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
        s3 = self.client("s3")
        kwargs: dict[str, Any] = {"Bucket": spec.bucket}
        if spec.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": spec.region}
        s3.create_bucket(**kwargs)

        def revert() -> None:
            self._delete_keys(spec.bucket, self.keys(spec.bucket, ""))
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

    def _delete_keys(self, bucket: str, keys: list[str]) -> None:
        s3 = self.client("s3")
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})

    def delete_objects(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        self._delete_keys(spec.bucket, list(action.params["keys"]))

    def delete_bucket(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> None:
        s3 = self.client("s3")
        left = s3.list_objects_v2(Bucket=spec.bucket, MaxKeys=5).get("KeyCount", 0)
        if left:
            self.echo(f"kept bucket {spec.bucket}: it holds objects outside {spec.prefix}/ that deploy did not create")
            return
        s3.delete_bucket(Bucket=spec.bucket)

    def create_code_upload(self, spec: DeploySpec, action: Action, state: dict[str, Any]) -> Revert:
        """A code zip over the direct-upload limit, put in the bucket for Lambda to fetch."""
        s3 = self.client("s3")
        key = action.params["key"]
        s3.upload_file(str(action.params["archive"].path), spec.bucket, key)

        def revert() -> None:
            s3.delete_object(Bucket=spec.bucket, Key=key)

        return revert
