"""``StandaloneExecutor``: the part of Covalent's ``AsyncBaseExecutor`` that ``AWSLambdaExecutor``
relies on, its base class when Covalent is not installed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lambdarun.errors import TaskCancelledError

__all__ = ["StandaloneExecutor"]


class StandaloneExecutor:
    """The part of Covalent's ``AsyncBaseExecutor`` this executor relies on, for use without
    Covalent: the common attributes, ``to_dict``/``from_dict`` and ``execute``."""

    SUPPORTS_MANAGED_EXECUTION = False

    def __init__(
        self,
        log_stdout: str = "",
        log_stderr: str = "",
        cache_dir: str = "",
        time_limit: int = -1,
        retries: int = 0,
        **kwargs: Any,
    ) -> None:
        self.log_stdout = log_stdout
        self.log_stderr = log_stderr
        self.cache_dir = cache_dir
        self.time_limit = time_limit
        self.retries = retries
        self.poll_freq = kwargs.get("poll_freq", 15)
        self.remote_cache = kwargs.get("remote_cache", "")
        self.credentials_file = kwargs.get("credentials_file", "")
        self.covalent_version = kwargs.get("covalent_version", "")

    def short_name(self) -> str:
        return self.__module__.split("/")[-1].split(".")[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"type": str(self.__class__), "short_name": self.short_name(), "attributes": self.__dict__.copy()}

    def from_dict(self, object_dict: Mapping[str, Any]) -> Any:
        if object_dict:
            import copy

            self.__dict__ = copy.deepcopy(dict(object_dict["attributes"]))
        return self

    @property
    def task_stdout(self) -> Any:
        return self.__dict__.get("_task_stdout")

    @property
    def task_stderr(self) -> Any:
        return self.__dict__.get("_task_stderr")

    async def _execute(self, function: Callable[..., Any], args: list, kwargs: dict, dispatch_id: str,
                       results_dir: str, node_id: int = -1) -> tuple[Any, str, str, str]:
        return await self.execute(function, args, kwargs, dispatch_id, results_dir, node_id)

    async def execute(self, function: Callable[..., Any], args: list, kwargs: dict, dispatch_id: str,
                      results_dir: str, node_id: int = -1) -> tuple[Any, str, str, str]:
        """Like Covalent's: setup, run, teardown; returns (result, stdout, stderr, status)."""
        import io

        self._task_stdout = io.StringIO()
        self._task_stderr = io.StringIO()
        task_metadata = {"dispatch_id": dispatch_id, "node_id": node_id, "results_dir": results_dir}
        status = "FAILED"
        try:
            await self.setup(task_metadata=task_metadata)  # type: ignore[attr-defined]
            result = await self.run(function, args, kwargs, task_metadata)  # type: ignore[attr-defined]
            status = "COMPLETED"
        except TaskCancelledError:
            status, result = "CANCELLED", None
        finally:
            await self.teardown(task_metadata=task_metadata)  # type: ignore[attr-defined]
        return result, self._task_stdout.getvalue(), self._task_stderr.getvalue(), status
