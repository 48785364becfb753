"""``AWSLambdaExecutor``: Covalent's AWS Lambda executor, on lambdarun's covalent backend.

A drop-in replacement for ``covalent_awslambda_plugin.AWSLambdaExecutor`` (same constructor
and config keys, same defaults) that runs tasks through
:class:`~lambdarun_covalent.backend.CovalentBackend`: small tasks inline in one synchronous
invoke, large payloads through S3 by reference, long tasks asynchronously; the task's own
exception type with its remote traceback; stdout/stderr; a real timeout; cancel.

When Covalent is installed this class is a real Covalent executor (a ``RemoteExecutor``, so
an ``AsyncBaseExecutor``) and Covalent finds it through the entry point group
``covalent.executor.executor_plugins`` under the short name ``awslambda`` (Covalent derives
the short name from this module's name). Without Covalent the module still imports and the
executor works on its own, with the same methods, async and ``*_sync``.

Value of each setting, first found wins:

1. the constructor argument (``None`` means "not given"; ``0`` and ``False`` are values),
2. lambdarun's configuration, when set there (``[covalent]`` in ``lambdarun.toml``,
   ``LAMBDARUN_COVALENT__<KEY>``),
3. ``[executors.awslambda]`` of Covalent's config file
   (``$COVALENT_CONFIG_DIR/covalent.conf``, default ``~/.config/covalent/covalent.conf``),
4. the default (the original executor's defaults for its keys).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.errors import (
    FunctionNotFoundError,
    LambdarunError,
    RemoteEnvironmentError,
    TaskCancelledError,
    TaskTimeoutError,
)
from lambdarun_covalent.config import ORIGINAL_DEFAULTS
from lambdarun_covalent.electrons import ElectronTask, electron_task
from lambdarun_covalent.executor_settings import (  # noqa: F401 - covalent_config_file, read_covalent_section re-exported
    SETTING_KEYS,
    covalent_config_file,
    lambdarun_settings,
    read_covalent_section,
    refuse_unknown_arguments,
    resolve_settings,
    session_for,
    task_id_of,
)
from lambdarun_covalent.standalone import StandaloneExecutor

if TYPE_CHECKING:
    from lambdarun.futures import LambdaFuture
    from lambdarun.session import Session
    from lambdarun_covalent.backend import CovalentBackend

__all__ = [
    "AWSLambdaExecutor",
    "EXECUTOR_PLUGIN_NAME",
    "_EXECUTOR_PLUGIN_DEFAULTS",
    "COVALENT_AVAILABLE",
    "ExecutorTaskCancelledError",
    "covalent_config_file",
    "read_covalent_section",
]

log = structlog.get_logger(__name__)

#: Covalent looks for the class named here in this module
EXECUTOR_PLUGIN_NAME = "AWSLambdaExecutor"

#: written by Covalent into its config file as ``[executors.awslambda]`` (the original's keys
#: and defaults; lambdarun's own keys stay in lambdarun's configuration)
_EXECUTOR_PLUGIN_DEFAULTS: dict[str, Any] = dict(ORIGINAL_DEFAULTS)



# --------------------------------------------------------------------------------------
# Covalent, when it is installed
# --------------------------------------------------------------------------------------

try:  # Covalent is optional and heavy (~1 s to import, writes ~/.config/covalent)
    from covalent._shared_files.exceptions import TaskCancelledError as _CovalentTaskCancelled
    from covalent._shared_files.exceptions import TaskRuntimeError as _CovalentTaskRuntimeError
    from covalent.executor.executor_plugins.remote_executor import RemoteExecutor as _Base

    COVALENT_AVAILABLE = True
except Exception:  # ImportError, or a broken Covalent install: work standalone
    COVALENT_AVAILABLE = False
    _CovalentTaskCancelled = None  # type: ignore[assignment,misc]
    _CovalentTaskRuntimeError = None  # type: ignore[assignment,misc]
    _Base = None  # type: ignore[assignment,misc]


#: the base class without Covalent (tests build it directly)
_StandaloneExecutor = StandaloneExecutor

if _Base is None:
    _Base = StandaloneExecutor  # type: ignore[misc,assignment]


if _CovalentTaskCancelled is not None:

    class ExecutorTaskCancelledError(TaskCancelledError, _CovalentTaskCancelled):  # type: ignore[misc,valid-type]
        """The task was cancelled (Covalent marks the node CANCELLED)."""

else:

    class ExecutorTaskCancelledError(TaskCancelledError):  # type: ignore[no-redef]
        """The task was cancelled."""


# --------------------------------------------------------------------------------------
# the executor
# --------------------------------------------------------------------------------------


class AWSLambdaExecutor(_Base):  # type: ignore[misc,valid-type]
    """Covalent executor running each task as one lambdarun ``covalent`` backend call.

    The original's arguments (same defaults):

    :param function_name: the Lambda function (``covalent-awslambda-executor``); it must run
        ``lambdarun.runtime.handler`` (``lambdarun deploy``; the local target creates it).
    :param s3_bucket_name: bucket for large payloads (``covalent-lambda-job-resources``).
    :param credentials_file: AWS shared credentials file ("" = the default chain).
    :param profile: AWS profile ("" = the default chain).
    :param region: AWS region ("" = lambdarun's ``region``).
    :param execution_role: IAM role of the function (``CovalentLambdaExecutionRole``).
    :param poll_freq: kept for compatibility; completion checks back off adaptively.
    :param timeout: seconds a task may run (900); ``TaskTimeoutError`` within timeout + 1 s.

    lambdarun's (see :class:`~lambdarun_covalent.config.CovalentConfig`): ``target``,
    ``endpoint_url``, ``inline_limit``, ``mode``, ``async_threshold``,
    ``expected_duration``, ``memory``, ``retries``, ``keep_objects``, ``max_workers``,
    ``python_path``.

    :param session: the lambdarun session to run on (default: the process-wide one). Not
        serialized by :meth:`to_dict`.

    Covalent's base class takes ``log_stdout``, ``log_stderr``, ``cache_dir``,
    ``time_limit``, ``remote_cache`` and ``covalent_version``; any other keyword raises
    ``TypeError`` as the original does (``memory_size``? the key is ``memory``).
    """

    def __init__(
        self,
        function_name: str | None = None,
        s3_bucket_name: str | None = None,
        credentials_file: str | None = None,
        profile: str | None = None,
        region: str | None = None,
        execution_role: str | None = None,
        poll_freq: float | None = None,
        timeout: float | None = None,
        *,
        target: str | None = None,
        endpoint_url: str | None = None,
        inline_limit: int | None = None,
        mode: str | None = None,
        async_threshold: float | None = None,
        expected_duration: float | None = None,
        memory: int | None = None,
        retries: int | None = None,
        keep_objects: bool | None = None,
        max_workers: int | None = None,
        python_path: list[str] | None = None,
        session: Session | None = None,
        **kwargs: Any,
    ) -> None:
        refuse_unknown_arguments(kwargs)
        given = {
            "function_name": function_name,
            "s3_bucket_name": s3_bucket_name,
            "credentials_file": credentials_file,
            "profile": profile,
            "region": region,
            "execution_role": execution_role,
            "poll_freq": poll_freq,
            "timeout": timeout,
            "target": target,
            "endpoint_url": endpoint_url,
            "inline_limit": inline_limit,
            "mode": mode,
            "async_threshold": async_threshold,
            "expected_duration": expected_duration,
            "memory": memory,
            "retries": retries,
            "keep_objects": keep_objects,
            "max_workers": max_workers,
            "python_path": python_path,
        }
        values = resolve_settings(given, lambdarun_settings(session), read_covalent_section())
        super().__init__(
            poll_freq=values["poll_freq"],
            credentials_file=values["credentials_file"],
            retries=values["retries"],
            **kwargs,
        )
        for key in SETTING_KEYS:
            setattr(self, key, values[key])
        self._session = session
        self._init_local_state()

    def _init_local_state(self) -> None:
        self.__dict__.setdefault("_cancel_requested", False)
        self.__dict__.setdefault("_job_handle", None)
        self.__dict__.setdefault("_future", None)

    # -- serialization (Covalent stores executors as JSON) -----------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable: the public settings only (no session, futures or streams)."""
        out = super().to_dict()
        out["attributes"] = {k: v for k, v in out["attributes"].items() if not k.startswith("_")}
        return out

    def from_dict(self, object_dict: Mapping[str, Any]) -> AWSLambdaExecutor:
        session = self.__dict__.get("_session")
        super().from_dict(dict(object_dict) if object_dict else object_dict)
        self.__dict__.setdefault("_session", session)
        self._init_local_state()
        return self

    # -- lambdarun plumbing ---------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The resolved lambdarun ``[covalent]`` settings of this executor."""
        return {key: getattr(self, key) for key in SETTING_KEYS}

    @property
    def backend(self) -> CovalentBackend:
        """The lambdarun ``covalent`` backend these settings select (shared between instances)."""
        return self.backend_for()

    def backend_for(self, overrides: Mapping[str, Any] | None = None) -> CovalentBackend:
        """The backend of these settings with ``overrides`` (e.g. a DepsPip layer's function)."""
        session = session_for(self.__dict__.get("_session"), {**self.settings(), **(overrides or {})})
        return session.backend("covalent")  # type: ignore[return-value]

    def layer_overrides(self, task: ElectronTask) -> dict[str, Any]:
        """Settings that run ``task`` with its DepsPip requirements installed: a function per
        requirement set, with the layer on its ``PYTHONPATH`` (built here on first use)."""
        if not task.requirements:
            return {}
        from lambdarun_covalent.layers import ensure_layer

        layer = ensure_layer(task.requirements, what=f"electron {task.name!r}")
        return {
            "function_name": f"{self.function_name}-deps-{layer.key[:12]}",
            "python_path": [*self.python_path, str(layer.path)],
        }

    def submit(self, function: Callable[..., Any], args: Any, kwargs: Any,
               task_metadata: Mapping[str, Any] | None = None,
               overrides: Mapping[str, Any] | None = None) -> LambdaFuture:
        """Start the task and return its :class:`~lambdarun.futures.LambdaFuture`."""
        self._cancel_requested = False
        future = self.backend_for(overrides).submit(function, tuple(args or ()), dict(kwargs or {}))
        future.info["task_metadata"] = dict(task_metadata or {})
        self._future = future
        return future

    def job_handle(self, future: LambdaFuture | None = None) -> dict[str, Any]:
        """The JSON handle of a submitted task (what ``set_job_handle`` stores)."""
        future = future or self.__dict__.get("_future")
        if future is None:
            raise LambdarunError("no task was submitted by this executor yet")
        task = future.info.get("task")
        return task.handle() if task is not None else {"task_id": future.task_id}

    def _write_streams(self, future: LambdaFuture) -> None:
        for text, stream in ((future.stdout, self.task_stdout), (future.stderr, self.task_stderr)):
            if text and stream is not None:
                print(text, end="", file=stream)

    # -- the Covalent executor API (async) ----------------------------------------------------

    async def setup(self, task_metadata: dict) -> None:
        """Make sure the function exists (created on the local target)."""
        await asyncio.to_thread(self.setup_sync, task_metadata)

    async def run(self, function: Callable[..., Any], args: list, kwargs: dict, task_metadata: dict) -> Any:
        """Run the task on Lambda and return its result.

        A task that raises ends the way Covalent's own executors end it: its stdout and
        stderr, then the remote traceback (ending with the exception's type and message), go
        to the task's streams (the node's ``stdout``/``stderr``) and ``TaskRuntimeError`` marks
        the node FAILED. Without Covalent the task's own exception type is raised.
        An electron's ``DepsPip`` runs from a cached layer (:mod:`lambdarun_covalent.layers`).
        """
        task = electron_task(function)
        overrides = await asyncio.to_thread(self.layer_overrides, task)
        try:
            if task.covalent_wrapper:
                await asyncio.to_thread(self._check_covalent, overrides)
        except FunctionNotFoundError as exc:
            if not task.requirements:
                raise
            name = overrides["function_name"]
            requirements = Path(overrides["python_path"][-1]).parent / "requirements.txt"
            raise FunctionNotFoundError(
                f"electron {task.name!r} needs DepsPip {', '.join(task.requirements)}: it runs on the "
                f"function {name!r}, which holds those packages, and that function does not exist on "
                f"this target. Deploy it with those requirements: `LAMBDARUN_DEPLOY__REQUIREMENTS="
                f"{requirements} lambdarun deploy --function {name}`; or drop DepsPip and deploy "
                f"{self.function_name!r} with the packages."
            ) from exc
        future = await asyncio.to_thread(self.submit, task.function, args, kwargs, task_metadata, overrides)
        await self.set_job_handle(self.job_handle(future))
        failed = False
        try:
            return await asyncio.wrap_future(future)
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            if future.cancelled():
                raise ExecutorTaskCancelledError(
                    f"task {future.task_id} was cancelled (dispatch {task_metadata.get('dispatch_id')}, "
                    f"node {task_metadata.get('node_id')})"
                ) from None
            future.cancel()  # our caller was cancelled: stop the task too
            raise
        except TaskTimeoutError as exc:
            raise TaskTimeoutError(self._timeout_message(task, task_metadata, future)) from exc
        except Exception as exc:
            trace = future.remote_traceback
            if _CovalentTaskRuntimeError is None or not trace or isinstance(exc, RemoteEnvironmentError):
                raise
            failed = True
            self._write_streams(future)
            stream = self.task_stderr
            if stream is not None:
                print(trace, end="" if trace.endswith("\n") else "\n", file=stream)
            raise _CovalentTaskRuntimeError(trace) from None
        finally:
            if not failed:
                self._write_streams(future)

    def _check_covalent(self, overrides: Mapping[str, Any]) -> None:
        """Before an electron runs: the function runs this process's Covalent major.minor."""
        from lambdarun_covalent.versions import check_covalent_version, check_versions

        backend = self.backend_for(overrides)
        name = backend.function_name
        check_covalent_version(check_versions(backend.runtime_session, name), name)

    def _timeout_message(self, task: ElectronTask, task_metadata: Mapping[str, Any], future: LambdaFuture) -> str:
        return (
            f"electron {task.name!r} (dispatch {task_metadata.get('dispatch_id')}, node "
            f"{task_metadata.get('node_id')}, lambdarun task {future.task_id}) did not finish within "
            f"its timeout of {self.timeout:g} s on Lambda function {self.function_name!r}. Raise it "
            "with @ct.electron(executor=AWSLambdaExecutor(timeout=...)) or `timeout` under "
            "[executors.awslambda] in covalent.conf (at most 900 s, Lambda's limit)."
        )

    async def teardown(self, task_metadata: dict) -> None:
        """Nothing to release per task: each attempt deletes its own objects as it ends."""
        self.teardown_sync(task_metadata)

    async def cancel(self, task_metadata: dict | None = None, job_handle: Any = None) -> bool:
        """Cancel the task ``job_handle`` names (pending: never runs; running: stops waiting,
        the task ends CANCELLED, and the target stops it where it can). True if cancelled."""
        return await asyncio.to_thread(self.cancel_sync, task_metadata, job_handle)

    async def get_cancel_requested(self) -> bool:
        """Whether cancellation was requested (asks Covalent's dispatcher when running under it)."""
        if self._covalent_runtime():
            try:
                if await super().get_cancel_requested():  # type: ignore[misc]
                    return True
            except Exception:
                log.debug("Covalent could not answer get_cancel_requested", exc_info=True)
        return self.get_cancel_requested_sync()

    async def set_job_handle(self, handle: Any) -> Any:
        """Remember the job handle (and store it with Covalent's dispatcher when under it)."""
        self.set_job_handle_sync(handle)
        if self._covalent_runtime():
            return await super().set_job_handle(handle)  # type: ignore[misc]
        return True

    async def get_status(self, job_handle: Any = None) -> str:
        """PENDING, RUNNING, COMPLETED, FAILED, CANCELLED or UNKNOWN (not in this process)."""
        return self.get_status_sync(job_handle)

    # RemoteExecutor's abstract hooks, mapped onto the backend
    async def _validate_credentials(self) -> bool:
        return True

    async def _upload_task(self, *args: Any, **kwargs: Any) -> None:
        """Uploads happen per attempt, only when the call is over the inline limit."""

    async def submit_task(self, task_metadata: dict) -> Any:
        raise LambdarunError("use run(function, args, kwargs, task_metadata); tasks are submitted with their call")

    async def _poll_task(self, *args: Any, **kwargs: Any) -> Any:
        future = self.__dict__.get("_future")
        if future is not None:
            await asyncio.wrap_future(future)

    async def query_result(self, *args: Any, **kwargs: Any) -> Any:
        future = self.__dict__.get("_future")
        if future is None:
            raise LambdarunError("no task was submitted by this executor yet")
        return await asyncio.wrap_future(future)

    # -- the same, synchronous ----------------------------------------------------------------

    def setup_sync(self, task_metadata: dict | None = None) -> None:
        self.backend.function_name  # noqa: B018 - creates the function where the target can

    def run_sync(self, function: Callable[..., Any], args: Any, kwargs: Any,
                 task_metadata: dict | None = None) -> Any:
        future = self.submit(function, args, kwargs, task_metadata)
        self.set_job_handle_sync(self.job_handle(future))
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise ExecutorTaskCancelledError(f"task {future.task_id} was cancelled") from None
        finally:
            self._write_streams(future)

    def teardown_sync(self, task_metadata: dict | None = None) -> None:
        return None

    def cancel_sync(self, task_metadata: dict | None = None, job_handle: Any = None) -> bool:
        from lambdarun_covalent.backend import lookup_task

        self._cancel_requested = True
        handle = job_handle if job_handle is not None else self.__dict__.get("_job_handle")
        task_id = task_id_of(handle)
        if task_id is None:
            future = self.__dict__.get("_future")
            return bool(future is not None and future.cancel())
        task = lookup_task(task_id)
        if task is None:
            log.info("cannot cancel: task not in flight in this process", task_id=task_id)
            return False
        return task.future.cancel()

    def get_cancel_requested_sync(self) -> bool:
        return bool(self.__dict__.get("_cancel_requested"))

    def set_job_handle_sync(self, handle: Any) -> bool:
        self._job_handle = handle
        return True

    def get_status_sync(self, job_handle: Any = None) -> str:
        from lambdarun_covalent.backend import lookup_task

        handle = job_handle if job_handle is not None else self.__dict__.get("_job_handle")
        task_id = task_id_of(handle)
        future = self.__dict__.get("_future")
        if task_id is not None:
            task = lookup_task(task_id)
            if task is not None:
                return task.status
            if future is None or future.task_id != task_id:
                return "UNKNOWN"
        if future is None:
            return "UNKNOWN"
        task = future.info.get("task")
        return task.status if task is not None else "UNKNOWN"

    def _notify(self, action: Any, body: Any = None) -> None:
        """Covalent's message to its dispatcher; a no-op when no dispatcher set us up (so
        ``execute`` also works outside Covalent's dispatcher)."""
        if self._covalent_runtime():
            super()._notify(action, body)  # type: ignore[misc]

    def _covalent_runtime(self) -> bool:
        """True when Covalent's dispatcher initialised this executor (its message queues)."""
        return COVALENT_AVAILABLE and "_send_queue" in self.__dict__


def _register_with_covalent() -> None:
    """If Covalent's executor manager scanned its plugins while this module was still being
    imported (``import lambdarun_covalent.awslambda`` before ``import covalent``), it saw no
    class yet; register it now so ``executor="awslambda"`` works in either import order. With
    covalent-awslambda-plugin also installed, this executor takes the name."""
    try:
        from covalent.executor import _executor_manager
    except Exception:
        return
    current = _executor_manager.executor_plugins_map.get("awslambda")
    if current is None or str(getattr(current, "__module__", "")).startswith("covalent_awslambda_plugin"):
        # nothing yet, or the original executor (covalent-awslambda-plugin, same short name)
        # took the name while this module was still importing: the drop-in replacement wins
        _executor_manager._populate_executor_map_from_module(sys.modules[__name__])


if COVALENT_AVAILABLE:
    _register_with_covalent()
