"""Who may talk to the local stack: SigV4 with the stack's own credentials, never a browser.

Every local endpoint (the Lambda API with its ``/_lambdarun/...`` extension API, and moto's
server for S3/DynamoDB/IAM/STS/...) accepts only requests signed with AWS Signature Version 4
using the stack's credentials: a random access key id and secret generated when the stack
starts (:class:`StackCredentials`), stored 0600 in the stack's run directory, given to the
stack's own clients and injected into every function's environment as its runtime
credentials (the way Lambda injects the execution role's). ``lambdarun local up`` prints
them in its ``export`` lines, so a plain boto3 client set up from those keeps working.

:class:`SigV4Verifier` recomputes the signature with botocore's signer over the headers the
client signed and the client's ``X-Amz-Date``, and compares in constant time. Requests
carrying browser markers (``Origin``, ``Sec-Fetch-*``) are refused before anything else: a
web page must never reach a local endpoint, signed or not.

:class:`MotoFront` is the WSGI middleware in front of moto's server (moto accepts anonymous
requests and answers CORS for any origin): browsers, OPTIONS, bodies beyond the limit and
unsigned requests are refused with each service's own error shape, and moto's CORS headers
are stripped from what it answers.

Each part has its module: :mod:`.credentials`, :mod:`.sigv4`, :mod:`.moto_front` and
:mod:`.peer` (who holds the other end of a loopback connection); this module re-exports them.
"""


from __future__ import annotations

from lambdarun.local.credentials import CREDENTIALS_FILE, StackCredentials, signed_request
from lambdarun.local.moto_front import MOTO_BODY_LIMIT, MotoFront, moto_error
from lambdarun.local.peer import peer_held_by
from lambdarun.local.sigv4 import (
    BROWSER_HEADERS,
    MAX_SKEW_SECONDS,
    AuthFailure,
    SigV4Verifier,
    browser_marker,
    content_length,
)

__all__ = [
    "AuthFailure",
    "BROWSER_HEADERS",
    "CREDENTIALS_FILE",
    "MAX_SKEW_SECONDS",
    "MOTO_BODY_LIMIT",
    "MotoFront",
    "SigV4Verifier",
    "StackCredentials",
    "browser_marker",
    "content_length",
    "moto_error",
    "peer_held_by",
    "signed_request",
]
