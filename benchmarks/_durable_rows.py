"""The rows of ``test_durable_service.py``, and where a durable step's time goes: CPU per
step on each side of the local durable API.

Not a benchmark module (pytest does not collect it): the benchmark imports its row runners,
and run as a script it prints CPU per step and profiles. It runs the same N-step handler

* ``floor``: AWS's SDK (unmodified) in this process against a null durable service (a
  ``DurableServiceClient`` that answers each checkpoint with a new token and the operations
  the updates produce, and keeps nothing): what the SDK itself costs per step, the floor
  under any service;
* ``sdk``: AWS's SDK in a function on the local Lambda service, started with ``Invoke``,
  every checkpoint a ``CheckpointDurableExecution`` request;
* ``lrd``: lambdarun_durable's handler, the same way (per-step commits; ``lrd-batched``:
  ``checkpoint_batching``);
* ``runner``: AWS's in-process test runner (``aws-durable-execution-sdk-python-testing``);
* ``floor-nowait`` (diagnostic only, a *modified* SDK): ``floor`` with the SDK's 1 ms wait
  for sibling checkpoints (``_BLOCKED_CALLER_WAIT_SECONDS``) set to 0, which shows where
  the floor's wall time goes;

and prints, per step: wall time, the CPU of the service's side (this process: the local
service runs embedded in it), the CPU of the function's worker process (from
``/proc/<pid>/stat``), and the number of checkpoint requests the service answered.

    python benchmarks/_durable_rows.py --steps 1000 --rounds 3 floor sdk lrd runner
    python benchmarks/_durable_rows.py --profile service sdk   # cProfile of the service side
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

#: the handlers' main thread under cProfile when the event names a file (``--profile function``)
PROFILED = '''
import cProfile, functools

def profiled(handler):
    @functools.wraps(handler)
    def run(event, context):
        ops = (event.get("InitialExecutionState") or {}).get("Operations") or [{}]
        payload = (ops[0].get("ExecutionDetails") or {}).get("InputPayload") or "{}"
        path = __import__("json").loads(payload).get("profile_to")
        if not path:
            return handler(event, context)
        prof = cProfile.Profile()
        try:
            return prof.runcall(handler, event, context)
        finally:
            prof.dump_stats(path)
    return run
'''

SDK_SOURCE = PROFILED + '''
from aws_durable_execution_sdk_python import durable_execution

@profiled
@durable_execution
def handler(event, context):
    total = 0
    for i in range(event["steps"]):
        total += context.step(lambda _, i=i: i, name="s")
    return total
'''

LRD_SOURCE = PROFILED + '''
from lambdarun_durable import durable_execution


@profiled
@durable_execution
def handler(event, ctx):
    total = 0
    for i in range(event["steps"]):
        total += ctx.step(lambda _, i=i: i, name="s")
    return total
'''

#: the same handler with checkpoint batching, the explicit opt-in (an invocation input with
#: ``batching=True``, as lambdarun's own Lambda handler sets from ``[durable] checkpoint_batching``)
LRD_BATCHED_SOURCE = LRD_SOURCE.replace("@profiled\n", "").replace("def handler(", "def batched(") + '''

from lambdarun_durable.execution import DurableInvocationInput


@profiled
def handler(event, context):
    inv = DurableInvocationInput.from_event(event)
    inv.batching = True
    return batched(inv, context)
'''


def _sdk_handler() -> Any:
    import aws_durable_execution_sdk_python as aws

    @aws.durable_execution
    def handler(event: dict, context: Any) -> int:
        total = 0
        for i in range(event["steps"]):
            total += context.step(lambda _, i=i: i, name="s")
        return total

    return handler


class NullService:
    """A ``DurableServiceClient`` that keeps nothing: each checkpoint answers a fresh token
    and the operations its updates produce (as a service would), nothing is stored."""

    def __init__(self) -> None:
        self.calls = 0

    def checkpoint(self, durable_execution_arn: str, checkpoint_token: str, updates: list[Any],
                   client_token: str | None) -> Any:
        from aws_durable_execution_sdk_python.lambda_service import CheckpointOutput

        self.calls += 1
        now = datetime.datetime.now(datetime.timezone.utc)
        ops = []
        for u in updates:
            d = u.to_dict()
            status = {"START": "STARTED", "SUCCEED": "SUCCEEDED", "FAIL": "FAILED",
                      "RETRY": "PENDING", "CANCEL": "CANCELLED"}[d["Action"]]
            op: dict[str, Any] = {"Id": d["Id"], "Type": d["Type"], "Status": status, "StartTimestamp": now}
            for key in ("ParentId", "Name", "SubType"):
                if d.get(key):
                    op[key] = d[key]
            if d["Type"] == "STEP":
                op["StepDetails"] = {"Attempt": 1, **({"Result": d["Payload"]} if "Payload" in d else {})}
            if d["Type"] == "EXECUTION":
                continue
            ops.append(op)
        return CheckpointOutput.from_dict({"CheckpointToken": uuid.uuid4().hex,
                                           "NewExecutionState": {"Operations": ops}})

    def get_execution_state(self, durable_execution_arn: str, checkpoint_token: str, next_marker: str,
                            max_items: int = 1000) -> Any:
        from aws_durable_execution_sdk_python.lambda_service import StateOutput

        return StateOutput.from_dict({"Operations": []})


def floor(steps: int, *, no_wait: bool = False) -> dict[str, Any]:
    """The unmodified SDK against :class:`NullService`, in this process (``no_wait``: with
    its 1 ms wait for sibling checkpoints set to 0, a diagnostic; restored afterwards)."""
    import aws_durable_execution_sdk_python.state as sdk_state

    saved = sdk_state._BLOCKED_CALLER_WAIT_SECONDS
    if no_wait:
        sdk_state._BLOCKED_CALLER_WAIT_SECONDS = 0.0
    try:
        return _floor(steps)
    finally:
        sdk_state._BLOCKED_CALLER_WAIT_SECONDS = saved


def _floor(steps: int) -> dict[str, Any]:
    from aws_durable_execution_sdk_python.execution import (
        DurableExecutionInvocationInput,
        DurableExecutionInvocationInputWithClient,
    )

    handler = _sdk_handler()
    arn = "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST/durable-execution/x/y"
    now_ms = int(time.time() * 1000)
    event = {"DurableExecutionArn": arn, "CheckpointToken": "t0",
             "InitialExecutionState": {"Operations": [{
                 "Id": "y", "Type": "EXECUTION", "Status": "STARTED", "StartTimestamp": now_ms,
                 "ExecutionDetails": {"InputPayload": json.dumps({"steps": steps})}}], "NextMarker": ""}}
    svc = NullService()
    inv = DurableExecutionInvocationInputWithClient.from_durable_execution_invocation_input(
        DurableExecutionInvocationInput.from_json_dict(event), svc)
    wall, cpu = time.perf_counter(), time.process_time()
    out = handler(inv, None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert out["Status"] == "SUCCEEDED" and json.loads(out["Result"]) == sum(range(steps)), out
    return {"wall": wall, "service_cpu": 0.0, "function_cpu": cpu, "checkpoints": svc.calls}


def runner(steps: int) -> dict[str, Any]:
    import aws_durable_execution_sdk_python_testing.runner as runner_mod

    fn = _sdk_handler()
    wall, cpu = time.perf_counter(), time.process_time()
    with runner_mod.DurableFunctionTestRunner(fn) as r:
        res = r.run(input=json.dumps({"steps": steps}), execution_timeout=600)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert json.loads(res.result) == sum(range(steps)), res
    return {"wall": wall, "service_cpu": 0.0, "function_cpu": cpu, "checkpoints": None}


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)]


class OnService:
    """A local stack in this process with the functions of the rows that need one."""

    def __init__(self, stack: Any = None) -> None:
        from lambdarun.local.stack import LocalStack

        self.tmp = tempfile.TemporaryDirectory()
        self.owned = stack is None
        self.stack = stack if stack is not None else LocalStack(Path(self.tmp.name), idle_timeout=600).start()
        self.lam = self.stack.client("lambda")
        self.functions: dict[str, str] = {}
        self.api = next(e for e in self.stack.service.extensions if type(e).__name__ == "DurableApi")
        self.checkpoints = 0
        original = self._original_checkpoint = self.api.checkpoint

        def counting(*a: Any, **kw: Any) -> Any:
            self.checkpoints += 1
            return original(*a, **kw)

        self.api.checkpoint = counting

    def close(self) -> None:
        if self.owned:
            self.stack.stop()
        self.api.checkpoint = self._original_checkpoint
        self.tmp.cleanup()

    def function(self, kind: str) -> str:
        if kind in self.functions:
            return self.functions[kind]
        from lambdarun.local.testing import make_zip

        name = f"cpu-{kind}-{uuid.uuid4().hex[:6]}"
        common = dict(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                      Handler="app.handler", Timeout=900, MemorySize=1024, DurableConfig={"ExecutionTimeout": 3600})
        if kind == "sdk":
            self.lam.create_function(Code={"ZipFile": make_zip({"app.py": SDK_SOURCE})}, **common)
        else:
            import lambdarun
            import lambdarun_durable

            folder = Path(self.tmp.name) / kind
            folder.mkdir()
            (folder / "app.py").write_text(LRD_BATCHED_SOURCE if kind == "lrd-batched" else LRD_SOURCE)
            path = os.pathsep.join(str(Path(m.__file__).parent.parent) for m in (lambdarun_durable, lambdarun))
            self.lam.create_function(Code={"S3Bucket": "__local__", "S3Key": str(folder)},
                                     Environment={"Variables": {"PYTHONPATH": path}}, **common)
        self.functions[kind] = name
        self._invoke(name, 2)  # warm: a cold start is not what this measures
        return name

    def _invoke(self, name: str, steps: int, profile_to: str | None = None) -> None:
        payload = {"steps": steps, **({"profile_to": profile_to} if profile_to else {})}
        out = self.lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps(payload))
        body = out["Payload"].read()
        assert "FunctionError" not in out, body
        assert json.loads(body) == sum(range(steps)), body

    def run(self, kind: str, steps: int, profile: cProfile.Profile | None = None,
            profile_to: str | None = None) -> dict[str, Any]:
        name = self.function(kind)
        if profile is not None:
            # the service answers each request on a thread of its HTTP server: profile there
            from lambdarun.local.api import ApiHandler

            dispatch = ApiHandler._dispatch

            def profiled(handler: Any, method: str) -> None:
                if not handler.path.startswith("/2025-12-01/"):  # the Invoke waits the whole run:
                    return dispatch(handler, method)  # only the durable API's requests are profiled
                profile.enable()
                try:
                    dispatch(handler, method)
                finally:
                    profile.disable()

            ApiHandler._dispatch = profiled  # type: ignore[method-assign]
            try:
                return self.run(kind, steps)
            finally:
                ApiHandler._dispatch = dispatch  # type: ignore[method-assign]
        pids = _descendants()
        before = {p: _proc_cpu(p) for p in pids}
        self.checkpoints = 0
        wall, cpu, sys_cpu = time.perf_counter(), time.process_time(), os.times().system
        self._invoke(name, steps, profile_to)
        wall, cpu, sys_cpu = time.perf_counter() - wall, time.process_time() - cpu, os.times().system - sys_cpu
        fn_cpu = 0.0
        for p in _descendants():
            try:
                fn_cpu += _proc_cpu(p) - before.get(p, 0.0)
            except OSError:
                pass
        return {"wall": wall, "service_cpu": cpu, "service_sys": sys_cpu, "function_cpu": fn_cpu,
                "checkpoints": self.checkpoints}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", choices=["floor", "floor-nowait", "sdk", "lrd", "lrd-batched", "runner"])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--service-synchronous", choices=["NORMAL", "FULL"], default=None,
                    help="the local service store's SQLite synchronous (default: the service's, NORMAL); "
                         "FULL fsyncs every checkpoint (survives power loss)")
    ap.add_argument("--profile", choices=["service", "function", "floor"], help="print a cProfile of that side")
    args = ap.parse_args(argv)
    if args.service_synchronous:
        import lambdarun_durable.local_api.api as durable_api

        durable_api.NORMAL = args.service_synchronous  # read when the service starts below
    on_service = None
    # CPU time of the profiled thread (the service's request thread, or this one), not wall
    # time: on a loaded machine wall time mostly measures the other processes
    prof = cProfile.Profile(time.thread_time) if args.profile else None
    function_stats: pstats.Stats | None = None
    try:
        print(f"steps={args.steps} rounds={args.rounds} load={os.getloadavg()[0]:.2f} "
              f"service synchronous={args.service_synchronous or 'NORMAL (default)'}")
        print(f"{'row':<12} {'steps/s':>9} {'wall/step':>10} {'svc CPU/step':>13} {'(of it sys)':>11} "
              f"{'fn CPU/step':>12} {'CPU/step':>9} {'checkpoints':>11}")
        for row in args.rows:
            samples = []
            for _ in range(args.rounds):
                if row in ("floor", "floor-nowait"):
                    if prof is not None and args.profile == "floor":
                        prof.enable()
                    samples.append(floor(args.steps, no_wait=row == "floor-nowait"))
                    if prof is not None and args.profile == "floor":
                        prof.disable()
                elif row == "runner":
                    samples.append(runner(args.steps))
                else:
                    on_service = on_service or OnService()
                    fn_prof = os.path.join(on_service.tmp.name, "function.prof") \
                        if args.profile == "function" else None
                    samples.append(on_service.run(row, args.steps, prof if args.profile == "service" else None,
                                                  profile_to=fn_prof))
                    if fn_prof:
                        function_stats = pstats.Stats(fn_prof)
            med = {k: statistics.median(s.get(k, 0.0) for s in samples)
                   for k in ("wall", "service_cpu", "service_sys", "function_cpu")}
            n = args.steps
            cps = samples[-1]["checkpoints"]
            print(f"{row:<12} {n / med['wall']:>9,.0f} {1e3 * med['wall'] / n:>8.3f}ms "
                  f"{1e3 * med['service_cpu'] / n:>11.3f}ms {1e3 * med['service_sys'] / n:>9.3f}ms "
                  f"{1e3 * med['function_cpu'] / n:>10.3f}ms "
                  f"{1e3 * (med['service_cpu'] + med['function_cpu']) / n:>7.3f}ms {'' if cps is None else cps:>11}",
                  flush=True)
        print(f"load after={os.getloadavg()[0]:.2f}")
    finally:
        if on_service is not None:
            on_service.close()
    if prof is not None:
        stats = function_stats if function_stats is not None else pstats.Stats(prof)
        stats.stream = sys.stdout  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
