"""A function's code: materialising a ``Code`` / UpdateFunctionCode body into a directory
(a local directory used in place, a base64 zip, or a zip in the stack's S3), and extracting
zips safely within Lambda's size quotas."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import shutil
import stat
import uuid
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from lambdarun.local.aws_clients import AwsClients
from lambdarun.local.options import LOCAL_CODE_BUCKETS, UNZIPPED_CODE_LIMIT, ZIP_UPLOAD_LIMIT
from lambdarun.local.shapes import ApiError
from lambdarun.private_files import private_dir


@attrs.frozen
class Code:
    """Where a function's code is: ``directory`` (``local``: used in place), its
    ``CodeSha256`` and ``CodeSize`` as Lambda reports them."""

    directory: Path
    local: bool
    sha256: str
    size: int


def materialise_code(name: str, code: Mapping[str, Any], functions_dir: Path, clients: AwsClients) -> Code:
    """The code of a ``Code`` / UpdateFunctionCode body; a zip goes to a new
    ``functions_dir/<name>/code-<id>/``."""
    if code.get("ImageUri"):
        raise ApiError(400, "InvalidParameterValueException",
                       "Container images are not supported by the local Lambda service; use a zip or Code={'S3Bucket': '__local__', 'S3Key': '/abs/dir'}.")
    bucket, key = code.get("S3Bucket"), code.get("S3Key")
    if bucket in LOCAL_CODE_BUCKETS:
        directory = Path(str(key or "")).expanduser()
        if not directory.is_absolute() or not directory.is_dir():
            raise ApiError(400, "InvalidParameterValueException",
                           f"S3Key must be an existing absolute directory for the local code bucket {bucket!r}, got {key!r}.")
        digest = hashlib.sha256(str(directory.resolve()).encode()).digest()
        return Code(directory.resolve(), True, base64.b64encode(digest).decode(), 0)
    if bucket:
        data = _fetch_s3(clients, bucket, str(key), code.get("S3ObjectVersion"))
    elif code.get("ZipFile"):
        try:
            data = base64.b64decode(code["ZipFile"])
        except (binascii.Error, TypeError) as e:
            raise ApiError(400, "InvalidParameterValueException", f"ZipFile is not base64: {e}") from e
    else:
        raise ApiError(400, "InvalidParameterValueException",
                       "Code needs ZipFile, S3Bucket/S3Key, or S3Bucket='__local__' with S3Key=<absolute directory>.")
    if len(data) > ZIP_UPLOAD_LIMIT:
        raise ApiError(413, "RequestEntityTooLargeException",
                       f"Zipped code must be smaller than {ZIP_UPLOAD_LIMIT} bytes.")
    target = functions_dir / name / f"code-{uuid.uuid4().hex[:12]}"
    extract_zip(data, target)
    # kept as uploaded: GetFunction's Code.Location serves it (see .code_location)
    fd = os.open(uploaded_zip(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(fd, "wb") as out:
        out.write(data)
    return Code(target, False, base64.b64encode(hashlib.sha256(data).digest()).decode(), len(data))


def uploaded_zip(code_dir: Path) -> Path:
    """Where the uploaded zip of an extracted ``code-<id>`` directory is kept."""
    return code_dir.with_name(code_dir.name + ".zip")


def remove_code(code_dir: Path) -> None:
    """Remove an extracted code directory and its uploaded zip."""
    shutil.rmtree(code_dir, ignore_errors=True)
    try:
        uploaded_zip(code_dir).unlink()
    except OSError:
        pass


def _fetch_s3(clients: AwsClients, bucket: str, key: str, version: str | None) -> bytes:
    try:
        s3 = clients.get("s3")
    except LookupError as e:
        raise ApiError(400, "InvalidParameterValueException",
                       "This local Lambda service has no S3 endpoint; upload a ZipFile instead.") from e
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version:
        kwargs["VersionId"] = version
    try:
        return s3.get_object(**kwargs)["Body"].read()
    except Exception as e:
        raise ApiError(400, "InvalidParameterValueException",
                       f"Error occurred while GetObject. S3 Error Code: {type(e).__name__}. S3 Error Message: {e}") from e


def _zip_member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member cannot be part of a function's code, or None."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
        return f"Zip member {name!r} has an absolute path or escapes the code directory."
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # made on Unix: the member's file type is known
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            return f"Zip member {name!r} is a symbolic link; symlinks are not accepted."
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            return f"Zip member {name!r} is a special file; only files and directories are accepted."
    return None


def extract_zip(data: bytes, target: Path) -> None:
    """Extract a deployment package into ``target`` (created 0700), or refuse it whole.

    Checked before anything is written: a readable zip, no absolute/``..`` paths, no
    symlinks or special files, and a declared unzipped size within Lambda's quota; the size
    is enforced again while extracting (the central directory can lie). On any refusal
    nothing is left on disk."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise ApiError(400, "InvalidParameterValueException", f"Could not unzip uploaded file: {e}") from e
    with zf:
        infos = zf.infolist()
        for info in infos:
            problem = _zip_member_problem(info)
            if problem is not None:
                raise ApiError(400, "InvalidParameterValueException", problem)
        if sum(i.file_size for i in infos) > UNZIPPED_CODE_LIMIT:
            raise ApiError(400, "InvalidParameterValueException",
                           f"Unzipped size must be smaller than {UNZIPPED_CODE_LIMIT} bytes")
        created_parent = not target.parent.exists()
        private_dir(target.parent)
        target.mkdir(mode=0o700)
        written = 0
        try:
            for info in infos:
                dest = target.joinpath(*[p for p in info.filename.split("/") if p not in ("", ".")])
                if not dest.resolve().is_relative_to(target.resolve()):
                    raise ApiError(400, "InvalidParameterValueException",
                                   f"Zip member escapes the code directory: {info.filename}")
                if info.is_dir():
                    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                executable = (info.external_attr >> 16) & 0o111
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o700 if executable else 0o600)
                with zf.open(info) as src, open(fd, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > UNZIPPED_CODE_LIMIT:
                            raise ApiError(400, "InvalidParameterValueException",
                                           f"Unzipped size must be smaller than {UNZIPPED_CODE_LIMIT} bytes")
                        out.write(chunk)
        except BaseException as e:
            shutil.rmtree(target, ignore_errors=True)
            if created_parent:
                try:
                    target.parent.rmdir()
                except OSError:
                    pass
            if isinstance(e, (zipfile.BadZipFile, OSError, EOFError, zlib.error)):
                raise ApiError(400, "InvalidParameterValueException",
                               f"Could not unzip uploaded file: {e}") from e
            raise
