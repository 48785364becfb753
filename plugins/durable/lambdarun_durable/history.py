"""The execution history as ``GetDurableExecutionHistory`` returns it: events from the records."""

from __future__ import annotations

import datetime
from typing import Any

from lambdarun_durable.records import fold

__all__ = ["event_time", "history_events"]


def event_time(ms: int | None) -> datetime.datetime | None:
    """An epoch-milliseconds timestamp as an aware UTC datetime (None stays None)."""
    return None if ms is None else datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def _payload(value: Any, include: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"Truncated": not include}
    if include and value is not None:
        out["Payload"] = value
    return out


def history_events(records: Any, *, include_execution_data: bool = True) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    records = list(records)
    latest = fold(records)
    for rec in records:
        etype = rec.get("E")
        if not etype:
            continue
        x = rec.get("X") or {}
        ev: dict[str, Any] = {"EventType": etype, "EventTimestamp": event_time(rec["T"]), "EventId": len(events) + 1}
        op = rec.get("Op")
        if op is not None:
            if op.get("SubType"):
                ev["SubType"] = op["SubType"]
            ev["Id"] = op["Id"]
            if op.get("Name"):
                ev["Name"] = op["Name"]
            if op.get("ParentId"):
                ev["ParentId"] = op["ParentId"]
        details: dict[str, Any] = {}
        kind = op["Type"] if op else None
        dkey = {
            "STEP": "StepDetails", "CONTEXT": "ContextDetails", "CALLBACK": "CallbackDetails",
            "CHAINED_INVOKE": "ChainedInvokeDetails",
        }.get(kind or "")
        d = (op or {}).get(dkey or "", {}) or {}
        if etype == "ExecutionStarted":
            details = {"Input": _payload(x.get("Input"), include_execution_data)}
            if x.get("ExecutionTimeout"):
                details["ExecutionTimeout"] = x["ExecutionTimeout"]
        elif etype == "ExecutionSucceeded":
            result = x.get("Result", ((op or {}).get("ExecutionDetails") or {}).get("Result"))
            details = {"Result": _payload(result, include_execution_data)}
        elif etype in ("ExecutionFailed", "ExecutionStopped", "ExecutionTimedOut"):
            error = x.get("Error", ((op or {}).get("ExecutionDetails") or {}).get("Error"))
            details = {"Error": _payload(error, include_execution_data)}
        elif etype in ("StepStarted", "ContextStarted"):
            details = {}
        elif etype.endswith("Succeeded") and kind in ("STEP", "CONTEXT", "CALLBACK", "CHAINED_INVOKE"):
            # a retry's event carries no result (the polled state stays in the operation)
            details = {"Result": _payload(None if x.get("Retry") else d.get("Result"), include_execution_data)}
            if x.get("RetryDetails"):
                details["RetryDetails"] = x["RetryDetails"]
        elif etype.endswith(("Failed", "TimedOut", "Stopped")) and kind in ("STEP", "CONTEXT", "CALLBACK", "CHAINED_INVOKE"):
            details = {"Error": _payload(d.get("Error"), include_execution_data)}
            if x.get("RetryDetails"):
                details["RetryDetails"] = x["RetryDetails"]
        elif etype == "WaitStarted":
            details = {"Duration": x.get("Duration"), "ScheduledEndTimestamp": event_time(x.get("ScheduledEndTimestamp"))}
        elif etype == "WaitSucceeded":
            details = {"Duration": x.get("Duration")}
        elif etype == "CallbackStarted":
            details = {k: x[k] for k in ("CallbackId", "HeartbeatTimeout", "Timeout") if k in x}
        elif etype == "ChainedInvokeStarted":
            details = {"FunctionName": x.get("FunctionName")}
            if x.get("Input") is not None:
                details["Input"] = _payload(x.get("Input"), include_execution_data)
            child = ((latest.get(op["Id"]) or {}).get("_Invoke") or {}).get("ChildArn") if op else None
            if child:
                details["DurableExecutionArn"] = child
        elif etype == "ExecutionPaused":
            details = {"PauseRequestTimestamp": event_time(x.get("PauseRequestTimestamp"))}
            if x.get("ExecutionTimeoutPaused") is not None:
                details["ExecutionTimeoutPaused"] = bool(x["ExecutionTimeoutPaused"])
            if x.get("Reason") is not None:  # botocore's EventPauseReason (sensitive: execution data)
                details["Reason"] = _payload(x["Reason"], include_execution_data)
        elif etype == "ExecutionResumed":
            details = {"ResumeRequestTimestamp": event_time(x.get("ResumeRequestTimestamp"))}
            if x.get("Reason") is not None:
                details["Reason"] = _payload(x["Reason"], include_execution_data)
        elif etype == "InvocationCompleted":
            details = {
                "StartTimestamp": event_time(x.get("StartTimestamp")),
                "EndTimestamp": event_time(x.get("EndTimestamp")),
                "RequestId": x.get("RequestId"),
            }
            if x.get("Error") is not None:  # a crashed or failed invocation (the service retries it)
                details["Error"] = _payload(x["Error"], True)
        ev[f"{etype}Details"] = details
        events.append(ev)
    return events
