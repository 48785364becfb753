"""Reading and acting on durable executions from outside them: what ``lambdarun durable ...``
and the dashboard's durable page use.

Where executions live on a durable-execution API (the local Lambda service, AWS Lambda
durable functions; the ``durable.api`` switch the backend reads, see
:func:`lambdarun_durable.backend.uses_durable_api`), :class:`ApiControl` calls it through the
target's boto3 ``lambda`` client (``session.target.client("lambda")``: its endpoint and
credentials). Where the in-process orchestrator keeps them (``durable.api = "orchestrator"``),
:class:`StoreControl` reads the checkpoint store (``durable.store_url``) through
:class:`~lambdarun_durable.service.DurableService`. Both answer in the API's shapes
(``GetDurableExecution``, ``GetDurableExecutionHistory``, ``ListDurableExecutionsByFunction``)
and raise :class:`DurableApiError` (``ExecutionNotFoundError`` for an unknown execution or
callback) with a message that says what to do.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.errors import ConfigError, ExecutionNotFoundError, LambdarunError

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = ["DurableApiError", "DurableExecutionNotFoundError", "ListFilter", "LIST_STATUSES", "ApiControl",
           "StoreControl", "open_control", "statuses_of"]

#: ListDurableExecutionsByFunction's Statuses (botocore's ExecutionStatus, less DELETING)
LIST_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED", "PAUSING", "PAUSED")


class DurableApiError(LambdarunError):
    """The durable-execution API refused a request (``code``: the API's error code)."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class DurableExecutionNotFoundError(ExecutionNotFoundError, DurableApiError):
    """No such durable execution (or callback) where this session looks."""

    def __init__(self, message: str, *, code: str = "ResourceNotFoundException") -> None:
        DurableApiError.__init__(self, message, code=code)

    def __str__(self) -> str:  # KeyError would quote it
        return str(self.args[0]) if self.args else ""


@attrs.frozen(kw_only=True)
class ListFilter:
    """ListDurableExecutionsByFunction's filters (None: no filter)."""

    statuses: tuple[str, ...] = ()
    name: str | None = None
    started_after: datetime.datetime | None = None
    started_before: datetime.datetime | None = None
    reverse: bool = False

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.statuses:
            out["Statuses"] = list(self.statuses)
        if self.name:
            out["DurableExecutionName"] = self.name
        if self.started_after is not None:
            out["StartedAfter"] = self.started_after
        if self.started_before is not None:
            out["StartedBefore"] = self.started_before
        if self.reverse:
            out["ReverseOrder"] = True
        return out


def _plain(response: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


class ApiControl:
    """The durable-execution API through a boto3 ``lambda`` client.

    :param client: ``session.target.client("lambda")`` (or any boto3 Lambda client).
    :param function_name: the function ``list`` reads when none is named (the durable
        backend's: :func:`~lambdarun_durable.backend.api_function_name`).
    :param where: the endpoint, for messages.
    """

    kind = "api"

    def __init__(self, client: Any, *, function_name: str, where: str = "") -> None:
        self.client = client
        self.function_name = function_name
        self.where = where or getattr(getattr(client, "meta", None), "endpoint_url", "") or "the Lambda service"

    # -- errors
    def _call(self, what: str, subject: str, fn: Any, /, **params: Any) -> dict[str, Any]:
        subject = subject if len(subject) <= 200 else subject[:200] + "..."
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

        try:
            return _plain(fn(**params))
        except ClientError as exc:
            raise self._error(what, subject, exc) from None
        except ParamValidationError as exc:
            raise DurableApiError(f"{what} {subject}: the request is malformed ({exc})", code="ValidationError") from None
        except NoCredentialsError as exc:
            raise DurableApiError(
                f"{what} {subject}: no credentials for the Lambda service at {self.where} ({exc}): configure "
                "the aws target's credentials (aws.profile, aws.credentials_file or AWS_* variables)",
                code="NoCredentialsError") from None
        except BotoCoreError as exc:
            raise DurableApiError(
                f"{what} {subject}: the Lambda service at {self.where} did not answer ({exc}). Check that the "
                "target is running (the local stack: lambdarun local start) and the target/region settings",
                code=type(exc).__name__) from None

    def _error(self, what: str, subject: str, exc: Any) -> DurableApiError:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code") or ""), str(error.get("Message") or exc)
        head = f"{what} {subject}: {code}: {message}"
        if code == "ResourceNotFoundException":
            hint = ("check the name (lambdarun durable list --function NAME lists a function's executions) "
                    f"and that this session's target ({self.where}) is the one that ran it")
            return DurableExecutionNotFoundError(f"{head}. Not found: {hint}", code=code)
        hints = {
            "ValidationException": "the request is malformed: fix the value the message names",
            "InvalidParameterValueException": "fix the value the message names (see lambdarun durable COMMAND --help)",
            "ResourceConflictException": "the execution is not in a state that allows this (lambdarun durable describe ARN shows it)",
            "CallbackTimeoutException": "the callback timed out: the execution has gone on without it",
            "TooManyRequestsException": "the service is throttling: try again in a moment",
            "AccessDeniedException": "the credentials of this session's target may not do this",
        }
        hint = hints.get(code, "see the service's message")
        return DurableApiError(f"{head}. {hint[0].upper()}{hint[1:]}", code=code)

    # -- read
    def describe(self, arn: str, *, include_data: bool = True) -> dict[str, Any]:
        return self._call("GetDurableExecution", arn, self.client.get_durable_execution,
                          DurableExecutionArn=arn, IncludeExecutionData=include_data)

    def history(self, arn: str, *, include_data: bool = True, reverse: bool = False,
                max_items: int | None = None, marker: str | None = None) -> dict[str, Any]:
        """``{"Events": [...]}``: every page, or up to ``max_items`` events from ``marker``
        (then ``NextToken``, botocore's paging token, when more follow: pass it as ``marker``)."""
        return self._paged("GetDurableExecutionHistory", arn, "get_durable_execution_history", "Events",
                           max_items, marker, DurableExecutionArn=arn, IncludeExecutionData=include_data,
                           **({"ReverseOrder": True} if reverse else {}))

    def list_executions(self, function: str | None = None, filters: ListFilter = ListFilter(), *,
                        max_items: int | None = 100, marker: str | None = None) -> dict[str, Any]:
        """``{"DurableExecutions": [...], "NextToken"?}``: ListDurableExecutionsByFunction."""
        function = function or self.function_name
        return self._paged("ListDurableExecutionsByFunction", function, "list_durable_executions_by_function",
                           "DurableExecutions", max_items, marker, FunctionName=function, **filters.params())

    def _paged(self, what: str, subject: str, op: str, key: str, max_items: int | None,
               marker: str | None, **params: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            paginator = self.client.get_paginator(op)
            config: dict[str, Any] = {}
            if max_items is not None:
                config["MaxItems"] = max_items
            if marker:
                config["StartingToken"] = marker
            result = paginator.paginate(**params, PaginationConfig=config).build_full_result()
            out = {key: result.get(key) or []}
            if result.get("NextToken"):
                out["NextToken"] = result["NextToken"]
            return out

        return self._call(what, subject, lambda: run())

    # -- act
    def stop(self, arn: str, error: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._call("StopDurableExecution", arn, self.client.stop_durable_execution,
                          DurableExecutionArn=arn, **({"Error": dict(error)} if error else {}))

    def pause(self, arn: str, *, reason: str | None = None) -> dict[str, Any]:
        return self._call("PauseDurableExecution", arn, self.client.pause_durable_execution,
                          DurableExecutionArn=arn, **({"Reason": reason} if reason else {}))

    def resume(self, arn: str, *, reason: str | None = None) -> dict[str, Any]:
        return self._call("ResumeDurableExecution", arn, self.client.resume_durable_execution,
                          DurableExecutionArn=arn, **({"Reason": reason} if reason else {}))

    def delete(self, arn: str) -> dict[str, Any]:
        return self._call("DeleteDurableExecution", arn, self.client.delete_durable_execution,
                          DurableExecutionArn=arn)

    def send_callback_success(self, callback_id: str, result: str | bytes | None = None) -> dict[str, Any]:
        data = result.encode("utf-8") if isinstance(result, str) else (result or b"")
        return self._call("SendDurableExecutionCallbackSuccess", callback_id,
                          self.client.send_durable_execution_callback_success, CallbackId=callback_id, Result=data)

    def send_callback_failure(self, callback_id: str, error: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._call("SendDurableExecutionCallbackFailure", callback_id,
                          self.client.send_durable_execution_callback_failure, CallbackId=callback_id,
                          **({"Error": dict(error)} if error else {}))

    def send_callback_heartbeat(self, callback_id: str) -> dict[str, Any]:
        return self._call("SendDurableExecutionCallbackHeartbeat", callback_id,
                          self.client.send_durable_execution_callback_heartbeat, CallbackId=callback_id)


class StoreControl:
    """The in-process orchestrator's checkpoint store (``durable.api = "orchestrator"``), in
    the API's shapes. Its executions have no function filter, no pause and no delete."""

    kind = "store"

    def __init__(self, service: Any, *, store_url: str) -> None:
        self.service = service
        self.store_url = store_url
        self.function_name = None

    def _call(self, fn: Any, /, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except ExecutionNotFoundError as exc:
            raise DurableExecutionNotFoundError(
                f"{exc} (checkpoint store {self.store_url}): check the ARN (lambdarun durable list), "
                "or set durable.api = 'auto' when the execution runs on a durable-execution API") from None

    def describe(self, arn: str, *, include_data: bool = True) -> dict[str, Any]:
        return self._call(self.service.describe, arn)

    def history(self, arn: str, *, include_data: bool = True, reverse: bool = False,
                max_items: int | None = None, marker: str | None = None) -> dict[str, Any]:
        events = list(self._call(self.service.get_history, arn, include_execution_data=include_data)["Events"])
        if reverse:
            events.reverse()
        return {"Events": events[:max_items] if max_items else events}

    def list_executions(self, function: str | None = None, filters: ListFilter = ListFilter(), *,
                        max_items: int | None = 100, marker: str | None = None) -> dict[str, Any]:
        status = filters.statuses[0] if len(filters.statuses) == 1 else None
        items = self.service.list_executions(status=status, limit=max_items or 1_000_000)
        if len(filters.statuses) > 1:
            items = [e for e in items if e.get("Status") in filters.statuses]
        if function:
            items = [e for e in items if e.get("FunctionName") == function]
        if filters.name:
            items = [e for e in items if e.get("DurableExecutionName") == filters.name]
        return {"DurableExecutions": items}

    def stop(self, arn: str, error: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._call(self.service.stop_execution, arn, dict(error) if error else None)
        return {}

    def _unsupported(self, what: str) -> DurableApiError:
        return DurableApiError(
            f"{what} needs a durable-execution API: this session keeps executions in the in-process "
            f"orchestrator's store ({self.store_url}, durable.api = 'orchestrator')", code="Unsupported")

    def pause(self, arn: str, *, reason: str | None = None) -> dict[str, Any]:
        raise self._unsupported("PauseDurableExecution")

    def resume(self, arn: str, *, reason: str | None = None) -> dict[str, Any]:
        raise self._unsupported("ResumeDurableExecution")

    def delete(self, arn: str) -> dict[str, Any]:
        raise self._unsupported("DeleteDurableExecution")

    def send_callback_success(self, callback_id: str, result: str | bytes | None = None) -> dict[str, Any]:
        self._call(self.service.send_callback_success, callback_id, result)
        return {}

    def send_callback_failure(self, callback_id: str, error: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._call(self.service.send_callback_failure, callback_id, dict(error) if error else None)
        return {}

    def send_callback_heartbeat(self, callback_id: str) -> dict[str, Any]:
        self._call(self.service.send_callback_heartbeat, callback_id)
        return {}


def open_control(session: Session) -> ApiControl | StoreControl:
    """The control of ``session``'s durable executions: on the target's durable-execution
    API, or (``durable.api = "orchestrator"``, or a target without the API) on the store."""
    from lambdarun_durable.backend import api_function_name, uses_durable_api

    config = session.settings.section("durable")
    if uses_durable_api(session):
        client = session.target.client("lambda")
        return ApiControl(client, function_name=api_function_name(session.settings))
    from lambdarun_durable.service import DurableService

    url = config.resolved_store_url()
    return StoreControl(DurableService(session.checkpoint_store(url), region=session.settings.region), store_url=url)


def statuses_of(values: Sequence[str]) -> tuple[str, ...]:
    """Validated status filters (upper-cased); ConfigError naming the allowed ones."""
    out = tuple(v.strip().upper() for v in values if v.strip())
    bad = [v for v in out if v not in LIST_STATUSES]
    if bad:
        raise ConfigError(f"unknown status {', '.join(bad)}: use {', '.join(LIST_STATUSES)}")
    return out
