"""The cloud test runner: a deployed durable function run through the Lambda API."""

from __future__ import annotations

import json
import time
from typing import Any

from lambdarun_durable.lambda_service import ErrorObject
from lambdarun_durable.testing.exceptions import DurableFunctionsTestError
from lambdarun_durable.testing.results import DurableFunctionTestResult


class DurableFunctionCloudTestRunner:
    """Runs a deployed durable function through the Lambda API and reads its end and history.

    AWS's cloud runner, to AWS's API (botocore's model): ``Invoke`` (RequestResponse or
    Event; the execution ARN from ``X-Amz-Durable-Execution-Arn``), ``GetDurableExecution``
    polled until the execution ends, ``GetDurableExecutionHistory`` (all pages, with
    execution data), ``SendDurableExecutionCallback*``. Point it at AWS (``region``) or at
    any endpoint speaking that API (``lambda_endpoint``: lambdarun's local target), or
    hand it a configured ``lambda_client``.
    """

    def __init__(
        self,
        function_name: str,
        region: str = "us-west-2",
        lambda_endpoint: str | None = None,
        poll_interval: float = 1.0,
        *,
        lambda_client: Any = None,
    ) -> None:
        self.function_name = function_name
        self.region = region
        self.lambda_endpoint = lambda_endpoint
        self.poll_interval = poll_interval
        if lambda_client is None:
            import boto3
            from botocore.config import Config

            lambda_client = boto3.client(
                "lambda", endpoint_url=lambda_endpoint, region_name=region, config=Config(parameter_validation=False)
            )
        self.lambda_client = lambda_client

    def __enter__(self) -> DurableFunctionCloudTestRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def _invoke(self, input: Any, invocation_type: str, execution_name: str | None) -> dict[str, Any]:  # noqa: A002
        kwargs: dict[str, Any] = {
            "FunctionName": self.function_name,
            "InvocationType": invocation_type,
            "Payload": json.dumps(input),
        }
        if execution_name:
            kwargs["DurableExecutionName"] = execution_name
        try:
            response = self.lambda_client.invoke(**kwargs)
        except Exception as e:  # noqa: BLE001 - reported with the function's name
            raise DurableFunctionsTestError(f"Failed to invoke Lambda function {self.function_name}: {e}") from e
        expected = 200 if invocation_type == "RequestResponse" else 202
        if response.get("StatusCode") != expected:
            body = response["Payload"].read().decode("utf-8")
            raise DurableFunctionsTestError(f"Lambda invocation failed with status {response.get('StatusCode')}: {body}")
        arn = response.get("DurableExecutionArn")
        if not arn:
            raise DurableFunctionsTestError(
                f"No DurableExecutionArn in the Invoke response of {self.function_name}: is it a durable function "
                "(created with DurableConfig) and invoked with a qualifier?"
            )
        return response

    def run(
        self, input: Any = None, timeout: int = 60, *, execution_name: str | None = None  # noqa: A002
    ) -> DurableFunctionTestResult:
        """Invoke synchronously (``input`` is JSON-encoded), then wait for the execution's end."""
        response = self._invoke(input, "RequestResponse", execution_name)
        return self.wait_for_result(response["DurableExecutionArn"], timeout=timeout)

    def run_async(self, input: Any = None, timeout: int = 60, *, execution_name: str | None = None) -> str:  # noqa: A002
        """Invoke with ``Event`` (202) and return the execution ARN."""
        return self._invoke(input, "Event", execution_name)["DurableExecutionArn"]

    def pause_execution(self, execution_arn: str, timeout: float = 60) -> None:
        raise NotImplementedError("pause_execution() is not implemented for DurableFunctionCloudTestRunner")

    def resume_execution(self, execution_arn: str) -> None:
        raise NotImplementedError("resume_execution() is not implemented for DurableFunctionCloudTestRunner")

    def send_callback_success(self, callback_id: str, result: bytes | str | None = None) -> None:
        kwargs: dict[str, Any] = {"CallbackId": callback_id}
        if result is not None:
            kwargs["Result"] = result.encode() if isinstance(result, str) else result
        self._call("send_durable_execution_callback_success", **kwargs)

    def send_callback_failure(self, callback_id: str, error: ErrorObject | dict | None = None) -> None:
        kwargs: dict[str, Any] = {"CallbackId": callback_id}
        if error is not None:
            kwargs["Error"] = dict(error.to_dict() if isinstance(error, ErrorObject) else error)
        self._call("send_durable_execution_callback_failure", **kwargs)

    def send_callback_heartbeat(self, callback_id: str) -> None:
        self._call("send_durable_execution_callback_heartbeat", CallbackId=callback_id)

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.lambda_client, op)(**kwargs)
        except Exception as e:  # noqa: BLE001
            raise DurableFunctionsTestError(f"{op} failed for {self.function_name}: {e}") from e

    def _not_found(self, e: Exception) -> bool:
        return getattr(e, "response", {}).get("Error", {}).get("Code") == "ResourceNotFoundException"

    def _wait_for_completion(self, execution_arn: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                execution = self.lambda_client.get_durable_execution(DurableExecutionArn=execution_arn)
            except Exception as e:  # noqa: BLE001
                if self._not_found(e):  # an Event invoke's execution may not be visible yet
                    time.sleep(self.poll_interval)
                    continue
                raise DurableFunctionsTestError(f"Failed to get execution status: {e}") from e
            last = execution.get("Status")
            if last in ("SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED"):
                return execution
            time.sleep(self.poll_interval)
        raise TimeoutError(f"Execution did not complete within {timeout}s (last status: {last})")

    def fetch_history(self, execution_arn: str) -> list[dict[str, Any]]:
        """Every event of ``GetDurableExecutionHistory`` (all pages, execution data included)."""
        events: list[dict[str, Any]] = []
        marker = None
        while True:
            kwargs: dict[str, Any] = {"DurableExecutionArn": execution_arn, "IncludeExecutionData": True}
            if marker:
                kwargs["Marker"] = marker
            page = self.lambda_client.get_durable_execution_history(**kwargs)
            events.extend(page.get("Events", []))
            marker = page.get("NextMarker")
            if not marker:
                return events

    def wait_for_result(self, execution_arn: str, timeout: int = 60) -> DurableFunctionTestResult:
        execution = self._wait_for_completion(execution_arn, timeout)
        try:
            events = self.fetch_history(execution_arn)
        except Exception as e:  # noqa: BLE001
            raise DurableFunctionsTestError(f"Failed to fetch execution history: {e}") from e
        execution.setdefault("DurableExecutionArn", execution_arn)
        return DurableFunctionTestResult.from_execution_history(execution, events)

    def wait_for_callback(self, execution_arn: str, name: str | None = None, timeout: int = 60) -> str:
        """The id of a started, unanswered callback (``name``: that one), once its invocation ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = callback_id_from_events(self.fetch_history(execution_arn), name)
            except DurableFunctionsTestError:
                raise
            except Exception as e:  # noqa: BLE001
                if not self._not_found(e):
                    raise DurableFunctionsTestError(f"Failed to fetch execution history: {e}") from e
                found = None
            if found:
                return found
            time.sleep(self.poll_interval)
        raise TimeoutError(f"Callback did not become available within {timeout}s.")


def callback_id_from_events(events: list[dict[str, Any]], name: str | None = None) -> str | None:
    """AWS's rule: a started callback not yet answered whose creating invocation has ended."""
    started = [e for e in events if e.get("EventType") == "CallbackStarted"]
    done = {e.get("Id") for e in events if e.get("EventType") in ("CallbackSucceeded", "CallbackFailed", "CallbackTimedOut")}

    def ready(ev: dict[str, Any]) -> bool:
        return any(e.get("EventType") == "InvocationCompleted" for e in events[events.index(ev) + 1 :])

    if name is not None:
        for ev in started:
            if ev.get("Name") == name:
                if ev.get("Id") in done:
                    raise DurableFunctionsTestError(f"Callback {name} has already completed (succeeded/failed/timed out)")
                return (ev.get("CallbackStartedDetails") or {}).get("CallbackId") if ready(ev) else None
        return None
    active = [ev for ev in started if ev.get("Id") not in done and ready(ev)]
    return (active[-1].get("CallbackStartedDetails") or {}).get("CallbackId") if active else None
