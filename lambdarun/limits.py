"""AWS Lambda's quotas that lambdarun decides by, in one place (see the AWS Lambda quotas page:
https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).

The local target enforces the same values, so code that fits locally fits on AWS.
"""

from __future__ import annotations

__all__ = [
    "SYNC_PAYLOAD_LIMIT",
    "SYNC_RESPONSE_LIMIT",
    "ASYNC_PAYLOAD_LIMIT",
    "UNZIPPED_CODE_LIMIT",
    "MAX_FUNCTION_TIMEOUT",
    "ACCOUNT_CONCURRENCY",
    "UNRESERVED_CONCURRENCY_MINIMUM",
    "SCALING_RATE",
    "SCALING_INTERVAL",
    "INIT_PHASE_LIMIT",
]

#: bytes of a synchronous (RequestResponse) request, and of its response
SYNC_PAYLOAD_LIMIT = 6_291_456
#: bytes of a synchronous response (AWS allows 100 bytes more than the request)
SYNC_RESPONSE_LIMIT = 6_291_556
#: bytes of an asynchronous (Event) request
ASYNC_PAYLOAD_LIMIT = 1_048_576
#: bytes of a function's code and layers, unzipped
UNZIPPED_CODE_LIMIT = 262_144_000
#: seconds: the longest timeout a function can have
MAX_FUNCTION_TIMEOUT = 900

# --- concurrency and scaling (https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html,
# https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html); the local target's
# defaults, which ``GetAccountSettings`` reports (see lambdarun.local.throttle.account_limits)

#: an account's default concurrent executions per region
ACCOUNT_CONCURRENCY = 1000
#: concurrency that reserved concurrency must leave to the functions without it
UNRESERVED_CONCURRENCY_MINIMUM = 100
#: new execution environments one function may get per :data:`SCALING_INTERVAL` seconds
SCALING_RATE = 1000
SCALING_INTERVAL = 10.0
#: seconds the Init phase of an on-demand environment may take before Lambda retries it
#: inside the first invocation, under the function's timeout
INIT_PHASE_LIMIT = 10.0
