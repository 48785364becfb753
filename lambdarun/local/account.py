"""GetAccountSettings: the local service's limits and usage in AWS's ``AccountLimit`` /
``AccountUsage`` shapes.

The concurrency figures are the ones the scheduler enforces: ``ConcurrentExecutions`` is the
service's global limit (:attr:`ServiceOptions.concurrency_limit`, ``max_concurrency`` or CPU
count x 4), ``UnreservedConcurrentExecutions`` that limit less every function's reserved
concurrency. Code sizes are Lambda's quotas (:mod:`lambdarun.limits`).

AWS reference: https://docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html,
https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html.
"""

from __future__ import annotations

from typing import Any

from lambdarun.local.model import Registry
from lambdarun.local.options import UNZIPPED_CODE_LIMIT, ZIP_UPLOAD_LIMIT, ServiceOptions
from lambdarun.local.throttle import account_limits

#: bytes of code (all functions and versions) an account may store: 75 GB
TOTAL_CODE_SIZE_LIMIT = 80_530_636_800


def account_settings(registry: Registry, options: ServiceOptions) -> dict[str, Any]:
    functions = registry.snapshot()
    with registry.lock:
        concurrency = account_limits(options.concurrency_limit, functions)
        code = sum(f.code_size + sum(v.code_size for v in f.versions.values()) for f in functions)
    return {
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_SIZE_LIMIT,
            "CodeSizeUnzipped": UNZIPPED_CODE_LIMIT,
            "CodeSizeZipped": ZIP_UPLOAD_LIMIT,
            **concurrency,
        },
        "AccountUsage": {"TotalCodeSize": code, "FunctionCount": len(functions)},
    }
