"""Every public module and name of ``aws_durable_execution_sdk_python`` exists in lambdarun_durable.

The comparison is computed from the installed SDK (``dir()`` of each public module: the
names it defines or lists in ``__all__``). What is allowed to differ is listed below with
the reason; an allowance that is no longer needed fails the test too, so the list stays
true. ``lambdarun_durable.testing`` is compared with ``aws_durable_execution_sdk_python_testing``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

aws = pytest.importorskip("aws_durable_execution_sdk_python")

ENGINE = "the SDK's engine internals (executors, checkpoint batcher, locks); lambdarun_durable has its own engine"
SERVICE_MODEL = (
    "the SDK's typed copies of the Lambda API shapes and its boto3 client wrapper; lambdarun_durable "
    "keeps operations as the API's dicts and talks to its store / the service directly"
)
TYPEVAR = "type variables used in the SDK's signatures"

#: modules of the SDK with no counterpart, and why
ALLOWED_MODULES: dict[str, str] = {
    "concurrency.executor": ENGINE,
    "operation": ENGINE + " (lambdarun_durable.operations has its own)",
    "operation.base": ENGINE,
    "operation.callback": ENGINE,
    "operation.child": ENGINE,
    "operation.invoke": ENGINE,
    "operation.map": ENGINE,
    "operation.parallel": ENGINE,
    "operation.step": ENGINE,
    "operation.wait": ENGINE,
    "operation.wait_for_condition": ENGINE,
    "suspend": ENGINE + " (suspension is lambdarun_durable.exceptions.SuspendExecution)",
    "threading": ENGINE,
}

#: names missing from a module that exists, and why
ALLOWED_NAMES: dict[str, tuple[set[str], str]] = {
    "concurrency.models": (
        {"Branch", "BranchEvent", "BranchEventKind", "BranchStatus", "CallableType", "CompletionRecord",
         "ResultType", "envelope_summary_generator"},
        ENGINE,
    ),
    "config": ({"P", "R", "T"}, TYPEVAR),
    "context": ({"P", "R", "U"}, TYPEVAR),
    "exceptions": (
        {"AwsErrorMetadata", "AwsErrorObj", "BackgroundThreadError", "BotoClientError", "CheckpointErrorCategory",
         "DurableApiErrorCategory", "GetExecutionStateError", "OrderedLockError"},
        "errors of the SDK's boto3 checkpoint client and background thread, which lambdarun_durable does not have",
    ),
    "execution": (
        {"DurableExecutionInvocationInput", "DurableExecutionInvocationInputWithClient", "InitialExecutionState",
         "handle_checkpoint_error"},
        "the SDK's parsed invocation event; lambdarun_durable's is execution.DurableInvocationInput",
    ),
    "lambda_service": (
        {"CallbackDetails", "CallbackOptions", "CallbackTimeoutType", "ChainedInvokeDetails", "ChainedInvokeOptions",
         "CheckpointOutput", "CheckpointUpdatedExecutionState", "ContextDetails", "ContextOptions",
         "DurableServiceClient", "ExecutionDetails", "LambdaClient", "Operation", "OperationUpdate", "StateOutput",
         "StepDetails", "StepOptions", "TimestampConverter", "WaitDetails", "WaitOptions"},
        SERVICE_MODEL,
    ),
    "logger": ({"LogInfo"}, ENGINE + " (the logger's per-operation context)"),
    "serdes": (
        {"BytesCodec", "Codec", "ContainerCodec", "DateTimeCodec", "DecimalCodec", "EncodedValue", "PrimitiveCodec",
         "TYPE_CODEC", "TypeCodec", "UuidCodec"},
        "ExtendedTypeSerDes's internal codecs; the envelope format they write is the same (tests/test_serdes.py)",
    ),
    "state": (
        {"CHECKPOINT_NOT_FOUND", "CheckpointBatcherConfig", "CheckpointedResult", "QueuedOperation", "ReplayStatus",
         "ScheduledRefresh"},
        ENGINE,
    ),
}

TESTING_ALLOWED: dict[str, str] = {
    "WebRunner": "AWS's HTTP runner: lambdarun's local target serves the real API instead",
    "WebRunnerConfig": "AWS's HTTP runner: lambdarun's local target serves the real API instead",
}


def _public_modules(pkg: ModuleType) -> list[str]:
    names = [""]
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        short = info.name[len(pkg.__name__) + 1 :]
        if not any(part.startswith("_") for part in short.split(".")):
            names.append(short)
    return names


def _public_names(module: ModuleType) -> set[str]:
    if hasattr(module, "__all__"):
        return set(module.__all__)
    out = set()
    for name in dir(module):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) == module.__name__ or type(obj).__name__ == "TypeVar":
            out.add(name)
    return out


def _compare() -> tuple[dict[str, str], dict[str, set[str]]]:
    missing_modules: dict[str, str] = {}
    missing_names: dict[str, set[str]] = {}
    for short in _public_modules(aws):
        theirs = importlib.import_module(f"{aws.__name__}.{short}" if short else aws.__name__)
        try:
            ours = importlib.import_module(f"lambdarun_durable.{short}" if short else "lambdarun_durable")
        except ModuleNotFoundError:
            missing_modules[short] = ""
            continue
        gone = {n for n in _public_names(theirs) if not hasattr(ours, n)}
        if gone:
            missing_names[short] = gone
    return missing_modules, missing_names


def test_every_sdk_module_exists_or_is_allowed() -> None:
    missing_modules, _ = _compare()
    assert sorted(set(missing_modules) - set(ALLOWED_MODULES)) == []
    assert sorted(set(ALLOWED_MODULES) - set(missing_modules)) == [], "stale allowance: the module exists now"


def test_every_sdk_name_exists_or_is_allowed() -> None:
    _, missing_names = _compare()
    unexplained = {m: sorted(n - ALLOWED_NAMES.get(m, (set(), ""))[0]) for m, n in missing_names.items()}
    assert {m: n for m, n in unexplained.items() if n} == {}
    stale = {m: sorted(a - missing_names.get(m, set())) for m, (a, _) in ALLOWED_NAMES.items()}
    assert {m: s for m, s in stale.items() if s} == {}, "stale allowance: the name exists now"


def test_the_names_issue_15_lists() -> None:
    from lambdarun_durable import filesystem_serdes, preview, types

    assert {"Callback", "DurableContext", "BatchResult"} <= set(dir(types))
    assert hasattr(filesystem_serdes, "FileSystemSerDes")
    assert hasattr(preview, "PreviewConfig") or hasattr(preview, "create_preview_generator")


def test_testing_package_names() -> None:
    theirs = pytest.importorskip("aws_durable_execution_sdk_python_testing")
    import lambdarun_durable.testing as ours

    missing = {n for n in theirs.__all__ if not hasattr(ours, n)} - {"__version__"}
    assert sorted(missing - set(TESTING_ALLOWED)) == []
    assert sorted(set(TESTING_ALLOWED) - missing) == [], "stale allowance"
    # AWS marks the local runner's pause/resume "experimental"; lambdarun's engine has no
    # paused state yet (Pause/ResumeDurableExecution come with the service API)
    # paused state yet (Pause/ResumeDurableExecution come with the service API);
    # DurableFunctionTestResult.create() takes AWS's in-memory Execution object
    allowed = {
        "DurableFunctionTestRunner": {"pause_execution", "resume_execution"},
        "DurableFunctionTestResult": {"create"},
    }
    for cls in ("DurableFunctionTestRunner", "DurableFunctionCloudTestRunner", "DurableFunctionTestResult"):
        their_attrs = {a for a in dir(getattr(theirs, cls)) if not a.startswith("_")}
        our_attrs = {a for a in dir(getattr(ours, cls)) if not a.startswith("_")}
        assert sorted(their_attrs - our_attrs) == sorted(allowed.get(cls, set())), cls
