"""OpenTelemetry helpers for Temporal workers in Lambda (extra ``otel``).

Same names as ``temporalio.contrib.aws.lambda_worker.otel``: :func:`apply_defaults`
(metrics through a per-invocation runtime + tracing for the ADOT collector layer),
:func:`apply_tracing`, :func:`build_metrics_telemetry_config`, :class:`OtelOptions`.

Difference: the flush hook is bounded. It calls ``force_flush(timeout_millis=...)`` with
the hook budget, and runs as a shutdown hook (its own time share, in a daemon thread), so
traces are exported before the handler returns and a slow or absent collector cannot push
the handler past the Lambda deadline. Core SDK metrics have no flush API; they are exported
every ``metric_periodicity`` and when the per-invocation runtime is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow

# passed through the workflow sandbox, like the package (see ``__init__``): a handler module
# that defines workflows and imports this module is re-imported for every workflow run
with workflow.unsafe.imports_passed_through():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import get_tracer_provider, set_tracer_provider
    from temporalio.contrib.opentelemetry import (
        OpenTelemetryPlugin,
        _serverless,
        create_tracer_provider,
    )
    from temporalio.runtime import Runtime, TelemetryConfig

    from lambdarun_temporal.lambda_worker._configure import LambdaWorkerConfig
    from lambdarun_temporal.lambda_worker._defaults import module_logger

__all__ = ["OtelOptions", "apply_defaults", "apply_tracing", "build_metrics_telemetry_config", "flush_hook"]

logger = module_logger(__name__)


@dataclass
class OtelOptions:
    """``metric_periodicity`` (10 s), ``service_name`` (else ``OTEL_SERVICE_NAME``, then
    ``AWS_LAMBDA_FUNCTION_NAME``, then ``temporal-lambda-worker``), ``collector_endpoint``
    (else ``OTEL_EXPORTER_OTLP_ENDPOINT``, then ``http://localhost:4317``)."""

    metric_periodicity: timedelta = field(default_factory=lambda: timedelta(seconds=10))
    service_name: str = ""
    collector_endpoint: str = ""


def build_metrics_telemetry_config(
    *, endpoint: str = "", service_name: str = "", metric_periodicity: timedelta | None = None
) -> TelemetryConfig:
    """A ``TelemetryConfig`` exporting Core SDK metrics to an OTLP collector."""
    return _serverless.build_metrics_telemetry_config(
        endpoint=endpoint, service_name=service_name, metric_periodicity=metric_periodicity
    )


def flush_hook(config: LambdaWorkerConfig):
    """A shutdown hook flushing the global tracer provider within the hook budget."""

    def flush_traces() -> None:
        provider = get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if flush is None:
            return
        millis = max(1, int(config.shutdown_hook_budget.total_seconds() * 1000))
        if flush(timeout_millis=millis) is False:
            logger.warning("OpenTelemetry flush did not complete in %d ms", millis)

    return flush_traces


def apply_tracing(config: LambdaWorkerConfig) -> None:
    """Add temporalio's ``OpenTelemetryPlugin`` (uses the global tracer provider) and a
    bounded flush hook."""
    config.worker_config["plugins"] = [*config.worker_config.get("plugins", []), OpenTelemetryPlugin()]
    config.shutdown_hooks.append(flush_hook(config))


def apply_defaults(config: LambdaWorkerConfig, options: OtelOptions | None = None) -> None:
    """Metrics (per-invocation runtime) and tracing (OTLP gRPC, X-Ray ids when available)."""
    options = options or OtelOptions()
    endpoint = _serverless.resolve_endpoint(options.collector_endpoint)
    service_name = _serverless.resolve_service_name(
        options.service_name, ["AWS_LAMBDA_FUNCTION_NAME"], "temporal-lambda-worker"
    )
    config.client_connect_config["runtime"] = Runtime(
        telemetry=build_metrics_telemetry_config(
            endpoint=endpoint, service_name=service_name, metric_periodicity=options.metric_periodicity
        )
    )
    resource = Resource.create({"service.name": service_name})
    try:
        from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator  # type: ignore[import-not-found]

        provider = create_tracer_provider(resource=resource, id_generator=AwsXRayIdGenerator())
    except ImportError:
        provider = create_tracer_provider(resource=resource)
    try:
        provider.add_span_processor(_serverless.build_otlp_span_processor(endpoint, insecure=True))
    except ImportError:
        logger.warning(
            "opentelemetry-exporter-otlp-proto-grpc is not installed; traces are not exported "
            "(pip install lambdarun-temporal[otel])"
        )
    set_tracer_provider(provider)
    apply_tracing(config)
