"""The end of one invocation: its ``END``/``REPORT`` lines in the environment's log (as Lambda
writes them), its record's outcome (status, error, response preview) and its log lines
shipped to CloudWatch Logs when that is on."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING

from lambdarun.local.options import RESPONSE_PREVIEW_BYTES

if TYPE_CHECKING:
    from lambdarun.local.environment import Environment
    from lambdarun.local.log_shipping import LogShipper
    from lambdarun.local.model import Invocation


def record_outcome(inv: Invocation) -> None:
    """Status, error and response preview of ``inv``'s record once it is done."""
    rec = inv.record
    if rec is None:
        return
    rec.response = inv.result[:RESPONSE_PREVIEW_BYTES]
    if inv.function_error is None:
        rec.status = "succeeded"
        rec.error_type = rec.error_message = None
        rec.error = None
        return
    rec.error = inv.result
    try:
        doc = json.loads(inv.result)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    rec.error_type = str(doc.get("errorType") or "") or None
    rec.error_message = str(doc.get("errorMessage") or "") or None
    if rec.error_type == "Sandbox.Timedout":
        rec.status = "timeout"
    elif rec.error_type == "Runtime.ExitError":
        rec.status = "crashed"
    else:  # handled errors, init errors, Runtime.Cancelled
        rec.status = "failed"


def write_report(env: Environment, inv: Invocation, cold: bool, shipper: LogShipper | None) -> None:
    """Write ``inv``'s END and REPORT lines, fill its record, ship its log lines."""
    if not inv.started_at:  # never reached the handler (init failure, early exit)
        inv.log_start = inv.log_start or env.log_size()
        env.write_log(f"START RequestId: {inv.request_id} Version: {env.function.version}\n")
        inv.started_at = time.perf_counter()
    duration = (time.perf_counter() - inv.started_at) * 1000
    parts = [
        f"REPORT RequestId: {inv.request_id}",
        f"Duration: {duration:.2f} ms",
        f"Billed Duration: {max(1, math.ceil(duration))} ms",
        f"Memory Size: {env.function.memory_size} MB",
        f"Max Memory Used: {env.max_memory_mb()} MB",
    ]
    init_ms = None
    if cold and not env.init_reported and env.init_duration_ms is not None:
        init_ms = env.init_duration_ms
        parts.append(f"Init Duration: {init_ms:.2f} ms")
        env.init_reported = True
    if inv.function_error and b"Sandbox.Timedout" in inv.result[:64]:
        parts.append("Status: timeout")
    elif inv.function_error and env.dead:
        parts.append("Status: error")
        if env.out_of_memory:
            parts.append("Error Type: Runtime.OutOfMemory")
    env.write_log(f"END RequestId: {inv.request_id}\n" + "\t".join(parts) + "\t\n")
    rec = inv.record
    if rec is not None:
        rec.duration_ms = round(duration, 2)
        rec.billed_ms = max(1, math.ceil(duration))
        rec.init_duration_ms = None if init_ms is None else round(init_ms, 2)
        rec.log_path = env.log_path
        rec.log_start = inv.log_start
        record_outcome(inv)
    if shipper is not None:
        shipper.add(env.function.name, env.log_stream, env.log_since(inv.log_start))
