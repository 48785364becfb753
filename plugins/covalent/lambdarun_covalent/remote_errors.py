"""What a Lambda function error means for a ``covalent`` task: the typed lambdarun error
(storage problem, timeout, dead environment, broken runtime) raised in its place."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from lambdarun.errors import LambdarunError, RemoteEnvironmentError, StorageError, TaskTimeoutError

if TYPE_CHECKING:
    from lambdarun_covalent.tasks import Attempt

__all__ = ["environment_error", "storage_failure"]


def environment_error(payload: bytes, attempt: Attempt) -> LambdarunError:
    """Map a Lambda function error (the environment failed around our handler)."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = {"errorType": "Unknown", "errorMessage": payload[:500].decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {"errorType": "Unknown", "errorMessage": str(body)[:500]}
    error_type = str(body.get("errorType", "Unknown"))
    message = str(body.get("errorMessage", ""))
    trace = body.get("stackTrace") or []
    remote_tb = "".join(trace) if isinstance(trace, list) else str(trace)
    stored = storage_failure(error_type, message, remote_tb, attempt)
    if stored is not None:
        return stored
    if error_type == "Sandbox.Timedout":
        return TaskTimeoutError(
            f"the Lambda function timed out running task {attempt.task.id}: {message}; raise the "
            "function's timeout (lambdarun deploy) and the covalent timeout"
        )
    if error_type.startswith("Runtime.") or error_type in ("Unknown",):
        what = "its execution environment died" if error_type == "Runtime.ExitError" else "its runtime failed"
        text = (
            f"task {attempt.task.id} failed because {what} ({error_type}: {message}). The function "
            "did not raise: the process running it exited (killed, out of memory, or crashed)."
        )
    else:
        text = (
            f"the Lambda runtime failed before or around task {attempt.task.id} ({error_type}: "
            f"{message}); check that the function runs lambdarun.runtime.handler with the "
            "lambdarun plugins installed"
        )
    return RemoteEnvironmentError(text, original_type=error_type, remote_traceback=remote_tb)


def storage_failure(error_type: str, message: str, remote_tb: str, attempt: Attempt) -> StorageError | None:
    """The function could not read the call or store the outcome of a large task: a storage
    problem (bucket missing, not writable), not a broken runtime."""
    if "storage.put(" in remote_tb or "PutObject" in message:
        what = f"ran task {attempt.task.id} but could not store its large result at {attempt.outcome_key!r}"
    elif "storage.get(" in remote_tb or "GetObject" in message:
        what = f"could not read the large call of task {attempt.task.id} at {attempt.call_key!r}"
    else:
        return None
    backend = attempt.task.backend
    return StorageError(
        f"the Lambda function {what} in {backend.storage_url} ({error_type}: {message}). The "
        "bucket must exist and the function must be allowed to read and write it: on AWS, "
        "`lambdarun deploy` creates the bucket and grants it (set [covalent] s3_bucket_name / "
        "AWSLambdaExecutor(s3_bucket_name=...) to that bucket); the local target creates it."
    )
