"""``backend="simple"``: each call is one synchronous Invoke of the lambdarun runtime function."""

import base64
import concurrent.futures
import json
import threading
import uuid

import attrs

from lambdarun import hookimpl
from lambdarun.backends import Backend
from lambdarun.calls import decode_outcome, encode_call
from lambdarun.errors import RemoteEnvironmentError, TaskTimeoutError
from lambdarun.futures import LambdaFuture
from lambdarun.runtime import function_environment
from lambdarun.types import FunctionSpec, InvocationType


@attrs.define
class SimpleConfig:  # the [simple] section: lambdarun.toml, LAMBDARUN_SIMPLE__TIMEOUT, options=
    timeout: float = 900.0
    function_name: str = "lambdarun-simple"


class SimpleBackend(Backend):
    id = "simple"

    def __init__(self, session):
        super().__init__(session)
        self.config = session.settings.section("simple")
        self.pool = concurrent.futures.ThreadPoolExecutor(32)
        spec = FunctionSpec(self.config.function_name, environment=function_environment(session.settings))
        self.function = session.target.ensure_function(spec)  # the lambdarun runtime, created once

    def submit(self, func, args, kwargs):
        task_id = uuid.uuid4().hex
        call = encode_call(self.session, func, args, kwargs, task_id=task_id)  # signed, bound to task_id
        payload = json.dumps({"lambdarun": 1, "call": base64.b64encode(call).decode()}).encode()
        future = LambdaFuture(task_id)
        late = TaskTimeoutError(f"task {task_id} ran over {self.config.timeout} s ([simple] timeout)")
        timer = threading.Timer(self.config.timeout, lambda: future.finish(exception=late))
        timer.daemon = True
        timer.start()
        future.add_done_callback(lambda _: timer.cancel())
        self.pool.submit(self._run, future, task_id, payload)
        return future

    def _run(self, future, task_id, payload):
        future.mark_running()
        try:
            response = self.session.invoker.invoke(self.function, payload, invocation_type=InvocationType.REQUEST_RESPONSE)
            if response.function_error:
                raise RemoteEnvironmentError(f"{self.function} failed: {response.payload[:300]!r}")
            data = base64.b64decode(json.loads(response.payload)["outcome"])
            outcome = decode_outcome(self.session, data, task_id=task_id, attempt=1)  # verified first
        except Exception as exc:
            future.finish(exception=exc)
            return
        future.finish(outcome.value, exception=outcome.exception, stdout=outcome.stdout,
                      stderr=outcome.stderr, remote_traceback=outcome.remote_traceback)

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


@hookimpl
def lambdarun_register_backends(register):
    register.add_backend(SimpleBackend)


@hookimpl
def lambdarun_register_config(register):
    register.add_section("simple", SimpleConfig)
