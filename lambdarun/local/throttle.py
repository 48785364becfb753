"""Lambda's throttling model, as an account has it: account concurrency shared by the
functions without reserved concurrency, reserved concurrency, and per-function scaling
(new execution environments per interval). The scheduler asks :class:`Throttle` before it
gives an invocation a slot; a refusal is a 429 ``TooManyRequestsException`` whose ``Reason``
is one of botocore's ``ThrottleReason`` values.

AWS docs: https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html (account and
reserved concurrency), https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html
(1,000 environments per 10 s per function), https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html
(``TooManyRequestsException``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from lambdarun.limits import SCALING_INTERVAL, UNRESERVED_CONCURRENCY_MINIMUM
from lambdarun.local.model import Function

__all__ = ["Throttle", "account_limits", "RESERVED_LIMIT", "ACCOUNT_LIMIT"]

#: ``Reason`` when a function with reserved concurrency runs that many invocations already
RESERVED_LIMIT = "ReservedFunctionConcurrentInvocationLimitExceeded"
#: ``Reason`` when the unreserved pool (or the account) is full, or the function's scaling
#: rate is spent
ACCOUNT_LIMIT = "ConcurrentInvocationLimitExceeded"


def account_limits(account_concurrency: int, functions: Iterable[Function]) -> dict[str, Any]:
    """``AccountLimit`` concurrency figures of ``GetAccountSettings`` for the local service:
    ``ConcurrentExecutions`` and ``UnreservedConcurrentExecutions`` (the account's minus
    what functions reserve)."""
    reserved = sum(f.reserved or 0 for f in functions if not f.deleted)
    return {
        "ConcurrentExecutions": account_concurrency,
        "UnreservedConcurrentExecutions": max(0, account_concurrency - reserved),
    }


class Throttle:
    """Whether one more invocation of a function may run now (call under the registry lock).

    :param account_concurrency: concurrent executions of the whole service (the account).
    :param scaling_rate: new environments one function may get per :data:`SCALING_INTERVAL`
        seconds (a token bucket of that size, refilled continuously).
    """

    def __init__(self, account_concurrency: int, scaling_rate: int) -> None:
        self.account_concurrency = account_concurrency
        self.scaling_rate = scaling_rate
        #: each function's scaling tokens and when they were last refilled
        self._tokens: dict[Function, tuple[float, float]] = {}

    @property
    def unreserved_minimum(self) -> int:
        """What reserved concurrency must leave unreserved (AWS: 100, less on a smaller
        account)."""
        return min(UNRESERVED_CONCURRENCY_MINIMUM, self.account_concurrency)

    def reason(self, fn: Function, functions: Iterable[Function], busy_total: int,
               *, new_environment: bool) -> str | None:
        """The ``Reason`` to refuse one more invocation of ``fn``, or None to run it.

        ``new_environment``: it needs a new environment (no idle one), which spends one of
        the function's scaling tokens."""
        if fn.reserved is not None:
            if fn.busy >= fn.reserved:
                return RESERVED_LIMIT
        else:
            reserved = busy_unreserved = 0
            for f in functions:
                if f.reserved is not None:
                    reserved += f.reserved
                else:
                    busy_unreserved += f.busy
            if busy_unreserved >= max(0, self.account_concurrency - reserved):
                return ACCOUNT_LIMIT
        if busy_total >= self.account_concurrency:
            return ACCOUNT_LIMIT
        if new_environment and not self._take_token(fn):
            return ACCOUNT_LIMIT
        return None

    def _take_token(self, fn: Function) -> bool:
        now = time.monotonic()
        tokens, since = self._tokens.get(fn, (float(self.scaling_rate), now))
        tokens = min(float(self.scaling_rate), tokens + (now - since) * self.scaling_rate / SCALING_INTERVAL)
        if tokens < 1.0:
            self._tokens[fn] = (tokens, now)
            return False
        self._tokens[fn] = (tokens - 1.0, now)
        return True

    def forget(self, fn: Function) -> None:
        self._tokens.pop(fn, None)
