"""Bad input gives a typed error with advice, before anything half-created is left behind."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from lambdarun.deploy import (
    UNZIPPED_LIMIT,
    BucketRegionError,
    DeployPermissionError,
    NoCompatibleWheelError,
    PackageSpec,
    PackageTooLargeError,
    build_package,
    Deployer,
    deploy,
    plan_deploy,
)
from lambdarun.errors import LambdarunError


def _gone(call, *codes):
    try:
        call()
    except Exception as exc:
        return getattr(exc, "response", {}).get("Error", {}).get("Code") in codes
    return False


def test_bucket_in_another_region(aws_session, boto, unique_name, durable_tables):
    bucket = unique_name("eu-bucket")
    boto("s3", "eu-west-1").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    session = aws_session(durable_tables, storage_url=f"s3://{bucket}/lambdarun", deploy={"table": unique_name("t")})
    fn = session.settings.function_name
    with pytest.raises(BucketRegionError) as info:
        deploy(session)
    message = str(info.value)
    assert "eu-west-1" in message and "us-east-1" in message and "Nothing was created" in message
    assert isinstance(info.value, LambdarunError)
    assert _gone(lambda: boto("iam").get_role(RoleName=f"{fn}-role"), "NoSuchEntity")
    assert _gone(lambda: boto("lambda").get_function(FunctionName=fn), "ResourceNotFoundException")


@pytest.fixture
def moto_auth(moto_url):
    """Turn on moto's IAM enforcement for the test (it is process-wide), off again after."""

    def post(value: str) -> None:
        req = urllib.request.Request(f"{moto_url}/moto-api/reset-auth", data=value.encode(), method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    class Switch:
        def __call__(self) -> None:
            post("0")

        def off(self) -> None:
            post("inf")

    switch = Switch()
    yield switch
    switch.off()


def test_denied_create_role_rolls_back_what_was_created(aws_session, boto, unique_name, tmp_path, moto_auth, durable_tables):
    iam = boto("iam")
    user = unique_name("deployer")
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="almost-admin",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "iam:CreateRole", "Resource": "*"},
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    creds = tmp_path / "credentials"
    creds.write_text(f"[deployer]\naws_access_key_id = {key['AccessKeyId']}\naws_secret_access_key = {key['SecretAccessKey']}\n")
    table = unique_name("tbl")
    session = aws_session(durable_tables, aws={"profile": "deployer", "credentials_file": str(creds)}, deploy={"table": table})
    fn = session.settings.function_name
    bucket = session.settings.storage_url.split("/")[2]

    # plan with enforcement off (moto cannot verify signatures of Lambda's REST paths), then
    # apply as the restricted user: bucket, table, signing key secret, then CreateRole is refused
    plan = plan_deploy(session)
    assert [(a.change.value, a.kind) for a in plan.changes][:4] == [
        ("create", "bucket"), ("create", "table"), ("create", "secret"), ("create", "role")
    ]
    moto_auth()
    with pytest.raises(DeployPermissionError) as info:
        Deployer(session.target).apply(plan)
    err = info.value
    assert err.action == "iam:CreateRole" and err.operation == "CreateRole"
    assert "grant iam:CreateRole" in str(err)
    # the bucket, the table and the secret had been created before CreateRole was refused:
    # all rolled back
    secret = plan.spec.signing_secret
    assert sorted(err.rolled_back) == sorted([f"bucket {bucket}", f"table {table}", f"secret {secret}"])
    assert "Rolled back" in str(err)
    moto_auth.off()
    assert _gone(lambda: boto("s3").head_bucket(Bucket=bucket), "404", "NoSuchBucket")
    assert _gone(lambda: boto("dynamodb").describe_table(TableName=table), "ResourceNotFoundException")
    assert _gone(lambda: iam.get_role(RoleName=f"{fn}-role"), "NoSuchEntity")
    assert _gone(lambda: boto("secretsmanager").describe_secret(SecretId=secret), "ResourceNotFoundException")




def test_oversized_package_is_refused_before_anything_is_created(aws_session, boto, built):
    session = aws_session(deploy={"unzipped_limit": built.function.unzipped_size - 1})
    fn = session.settings.function_name
    bucket = session.settings.storage_url.split("/")[2]
    with pytest.raises(PackageTooLargeError) as info:
        deploy(session)
    message = str(info.value)
    assert "over Lambda's limit" in message and "largest:" in message and "Nothing was built" in message
    assert _gone(lambda: boto("s3").head_bucket(Bucket=bucket), "404", "NoSuchBucket")
    assert _gone(lambda: boto("iam").get_role(RoleName=f"{fn}-role"), "NoSuchEntity")


def test_real_limit_is_lambdas_250_mb(tmp_path, cache_dir):
    assert UNZIPPED_LIMIT == 262_144_000  # 250 MiB, Lambda's quota for code + layers, unzipped
    big = tmp_path / "bigdata"
    big.mkdir()
    with open(big / "blob.bin", "wb") as f:  # sparse: 251 MiB on paper, no disk used
        f.truncate(251 * 1024 * 1024)
    spec = PackageSpec(python_version="3.11", cache_dir=cache_dir, include=(big,))
    with pytest.raises(PackageTooLargeError, match=r"largest: blob\.bin \(263\.2 MB\)"):
        build_package(spec)
    assert os.stat(big / "blob.bin").st_blocks == 0


def test_requirement_without_a_compatible_wheel_is_named(tmp_path, cache_dir, wheel_factory):
    wheels = tmp_path / "wheels"
    wheel_factory(wheels, "winonly", "1.0", {"winonly.py": "X = 1\n"}, tag="cp311-cp311-win_amd64")
    (wheels / "sdistonly-2.0.tar.gz").write_bytes(b"not used: sdists are never built")
    req = tmp_path / "requirements.txt"
    req.write_text(f"--no-index\n--find-links {wheels}\nwinonly==1.0\n")
    with pytest.raises(NoCompatibleWheelError) as info:
        build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir, requirements=req))
    assert info.value.package == "winonly"
    assert "winonly" in str(info.value) and "manylinux x86_64" in str(info.value) and "3.11" in str(info.value)
    req.write_text(f"--no-index\n--find-links {wheels}\nsdistonly\n")
    with pytest.raises(NoCompatibleWheelError) as info:
        build_package(PackageSpec(python_version="3.11", cache_dir=cache_dir, requirements=req))
    assert info.value.package == "sdistonly"
    # for arm64 the installed x86_64 msgpack wheel is not reused: pip must find an aarch64
    # one, and here (no index) there is none
    req.write_text(f"--no-index\n--find-links {wheels}\n")
    with pytest.raises(NoCompatibleWheelError) as info:
        build_package(PackageSpec(python_version="3.11", architecture="arm64", cache_dir=cache_dir, requirements=req))
    assert info.value.package == "msgpack" and "aarch64" in str(info.value)
