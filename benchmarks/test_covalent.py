"""Benchmarks of the covalent backend on the local target (local Lambda service + moto S3),
side by side with the original executor, ``covalent-awslambda-plugin`` 0.22.0.

    pytest benchmarks/test_covalent.py --full-bench --benchmark-enable

Targets (issue 5): warm round trip of a tiny task <= 20 ms median; map of 1000 tiny tasks
>= 200 tasks/s on 2 cores; a 10 MB argument (spilled to S3 by reference). Beside ours, the
original's round trip of the same tasks, interleaved task by task: a tiny task (its first
``head_object`` usually finds the result: its own per-call boto3 Sessions take longer than the
task, so its ``poll_freq`` is not paid) and a 1 s task (its first poll should miss and its
``poll_freq``, 5 s by default, be paid); and the first call of a fresh process on each side.

The reference runs in the same run, on the same local stack: its own Lambda handler
(``covalent_awslambda_plugin/exec.py`` from the installed package, zipped with the
``cloudpickle`` it imports, as its deployment package) is created as a function on our local
Lambda service, its bucket on moto's S3, and its executor is driven the way Covalent's
dispatcher drives it (``_init_runtime`` then ``_execute``) in a child process; see
``_covalent_reference.py``. It needs ``covalent`` and, installed with ``--no-deps`` (it pins
an old boto3), ``covalent-awslambda-plugin==0.22.0`` and ``covalent-aws-plugins==0.19.0``
(``benchmarks/requirements-reference.txt``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.local.testing import local_stack_fixture
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session

local_stack = local_stack_fixture(scope="module")

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024
ROUND_TRIP_TARGET_MS = 20
MAP_TARGET_TASKS_PER_S = 200
# the original's defaults (covalent_awslambda_plugin.awslambda._EXECUTOR_PLUGIN_DEFAULTS)
REFERENCE_FUNCTION = "covalent-awslambda-executor"
REFERENCE_BUCKET = "covalent-lambda-job-resources"
REFERENCE_NAME = "covalent-awslambda-plugin 0.22.0"


def _plugins() -> list[Any]:
    out: list[Any] = [lambdarun_covalent.plugin]
    if not any(name.startswith("lambdarun.local") for name in DEFAULT_PLUGINS):  # until the core does
        from lambdarun.local import plugin as local_plugin

        out.append(local_plugin)
    return out


@pytest.fixture(scope="module")
def session(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    pm = make_plugin_manager(_plugins(), load_entrypoints=False, environ={})
    overrides = {
        "target": "local",
        "local": {"state_dir": str(local_stack.state_dir)},
        "progress": False,
        "log_level": "WARNING",
        "covalent": {"function_name": "lambdarun-covalent-bench"},
    }
    with Session(pm, overrides=overrides, environ={}, cwd=tmp_path_factory.mktemp("cfg")) as s:
        # warm: function created, environments started, clients connected
        list(lambdarun.map(abs, range(-64, 0), backend="covalent", session=s))
        yield s


def _reference_package() -> dict[str, bytes]:
    """The original's Lambda handler plus the one dependency it imports beyond boto3."""
    spec = importlib.util.find_spec("covalent_awslambda_plugin.exec")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "covalent-awslambda-plugin is not installed: "
            "pip install --no-deps -r benchmarks/requirements-reference.txt"
        )
    import cloudpickle

    files = {"exec.py": Path(spec.origin).read_bytes()}
    root = Path(cloudpickle.__file__).parent
    files.update({f"cloudpickle/{p.name}": p.read_bytes() for p in root.glob("*.py")})
    return files


@pytest.fixture(scope="module")
def reference_env(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The original's bucket and function (its default names) on the local stack, and the
    environment of a child process that points boto3 (and Covalent's config) at them."""
    from lambdarun.local.testing import create_function

    lam = local_stack.client("lambda")
    local_stack.client("s3").create_bucket(Bucket=REFERENCE_BUCKET)
    create_function(lam, REFERENCE_FUNCTION, _reference_package(), handler="exec.handler",
                    timeout=900, memory_size=512)
    scratch = tmp_path_factory.mktemp("covalent-ref")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COVALENT_"))}
    env.update(local_stack.environment())
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               COVALENT_CONFIG_DIR=str(scratch / "config"), XDG_CACHE_HOME=str(scratch / "cache"),
               COVALENT_LOGDIR=str(scratch / "logs"))
    yield env
    lam.delete_function(FunctionName=REFERENCE_FUNCTION)


def run_reference(env: dict[str, str], rounds: int, poll_freq: float | None, warmup: int = 1) -> dict:
    cmd = [sys.executable, str(HERE / "_covalent_reference.py"), "--function", REFERENCE_FUNCTION,
           "--bucket", REFERENCE_BUCKET, "--rounds", str(rounds), "--warmup", str(warmup)]
    if poll_freq is not None:
        cmd += ["--poll-freq", str(poll_freq)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise AssertionError(f"reference executor failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class ReferenceDriver:
    """The original executor in a child process (``_covalent_reference.py --serve``), one task
    per :meth:`task`, so its tasks interleave with ours (A B A B ...)."""

    def __init__(self, env: dict[str, str], poll_freq: float | None) -> None:
        cmd = [sys.executable, str(HERE / "_covalent_reference.py"), "--function", REFERENCE_FUNCTION,
               "--bucket", REFERENCE_BUCKET, "--serve"]
        if poll_freq is not None:
            cmd += ["--poll-freq", str(poll_freq)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.poll_freq = float(self._line()["poll_freq"])

    def _line(self) -> dict:
        """The next JSON line (Covalent prints its own log lines on stdout too)."""
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"reference executor exited ({self.proc.wait()}); see its stderr above")
            if line.startswith("{"):
                return json.loads(line)

    def task(self, seconds: float = 0.0) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"task {seconds}\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _spread(samples_s: list[float]) -> str:
    ms = sorted(x * 1000 for x in samples_s)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return f"median {statistics.median(ms):,.1f} ms, IQR {q[0]:,.1f}-{q[2]:,.1f}, min {ms[0]:,.1f}, max {ms[-1]:,.1f}"


#: a short task's duration: longer than the original's own upload + invoke + first poll
#: (~0.5 s on a quiet machine), so its first head_object should miss and poll_freq be paid
SHORT_TASK_S = 1.0
#: ours runs the same work: sleep, then abs (a lambda: pickled by value, as the reference's is)
sleepy_abs = lambda x, seconds: (__import__("time").sleep(seconds), abs(x))[1]  # noqa: E731


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("task_s", [0.0, SHORT_TASK_S], ids=["tiny", "1s"])
def test_warm_round_trip(benchmark: Any, headline: Any, record_rss: None, session: Session,
                         reference_env: dict[str, str], full_bench: bool, task_s: float, tree_memory: Any) -> None:
    """A warm round trip, ours and the original's, interleaved task by task (A B A B ...).

    Ours: ``lambdarun.run(f, -1, backend="covalent")``. The original: its executor's
    ``_execute`` as Covalent's dispatcher calls it, with its default ``poll_freq`` (5 s; 0.1 s
    in smoke mode), on its own handler on the same local Lambda service and moto S3. ``tiny``
    is ``abs(-n)``; ``short`` sleeps 1 s first, longer than the original's own upload +
    invoke + first poll, so its first ``head_object`` should find nothing and its
    ``poll_freq`` be paid (the polls per task recorded say whether it was)."""
    rounds = (20 if task_s == 0 else 5) if full_bench else 1
    poll_freq = None if full_bench else 0.1
    task_s = task_s if full_bench else min(task_s, 0.05)  # smoke mode stays short
    memory_tasks = 3 if full_bench else 1
    driver = ReferenceDriver(reference_env, poll_freq)
    ours: list[float] = []
    theirs: list[dict] = []

    def ours_once() -> None:
        start = time.perf_counter()
        if task_s:
            assert lambdarun.run(sleepy_abs, -1, task_s, backend="covalent", session=session) == 1
        else:
            assert lambdarun.run(abs, -1, backend="covalent", session=session) == 1
        ours.append(time.perf_counter() - start)

    def pair() -> None:
        ours_once()
        theirs.append(driver.task(task_s))

    try:
        pair()  # warm-up of both (not recorded)
        ours.clear()
        theirs.clear()
        benchmark.pedantic(pair, rounds=rounds, iterations=1)
        # memory: the same number of tasks of each side, each in a phase of its own, measured
        # the same way (the whole process tree: the other side's idle environment included)
        with tree_memory() as ours_memory:
            for _ in range(memory_tasks):
                ours_once()
        with tree_memory() as theirs_memory:
            for _ in range(memory_tasks):
                driver.task(task_s)
    finally:
        driver.close()
    ours, theirs_s = ours[:rounds], [t["elapsed_s"] for t in theirs]
    polls = [t["polls"] for t in theirs]
    label = "a tiny task (abs)" if not task_s else f"a {task_s:g} s task"
    headline.set(
        f"covalent: warm round trip of {label}", statistics.median(ours) * 1000,
        reference=statistics.median(theirs_s) * 1000,
        reference_name=f"{REFERENCE_NAME}, poll_freq={driver.poll_freq:g} s (its default)" if full_bench
        else f"{REFERENCE_NAME}, poll_freq={driver.poll_freq:g} s",
        target=ROUND_TRIP_TARGET_MS if not task_s else None,
        peak_rss_mib=ours_memory.peak_mib, reference_peak_rss_mib=theirs_memory.peak_mib,
        samples_ms=[round(x * 1000, 1) for x in ours], reference_samples_ms=[round(x * 1000, 1) for x in theirs_s],
        reference_polls_per_task=polls,
        note=(
            f"{rounds} rounds, interleaved task by task (ours, then the original's). Ours: {_spread(ours)}. "
            f"The original: {_spread(theirs_s)}; head_object polls per task {polls} (1 = its first poll found "
            f"the result and no poll_freq sleep was paid; n = n-1 sleeps of {driver.poll_freq:g} s; each of its "
            "S3 and Lambda calls opens a new boto3 Session, ~75-90 ms). The original is "
            "driven as Covalent's dispatcher does (executor._init_runtime + _execute) with a plain function "
            f"instead of the dispatcher's wrapper_fn, a fresh dispatch_id per task. Memory: {memory_tasks} tasks of each "
            "side in phases of their own, peak PSS of the whole process tree (the other side's idle "
            "environment included in both)."
        ),
    )


FIRST_CALL = """
import json, sys, time
t0 = time.perf_counter()
import lambdarun
assert lambdarun.run(abs, -1, backend="covalent") == 1
print(json.dumps({"first_call_s": time.perf_counter() - t0}), flush=True)
"""


@pytest.mark.timeout(1800)
def test_first_call_of_a_process(benchmark: Any, headline: Any, record_rss: None, local_stack: Any,
                                 reference_env: dict[str, str], full_bench: bool,
                                 tmp_path: Path) -> None:
    """The first call of a fresh process, a new process per sample, interleaved (ours, the
    original's). Ours: ``import lambdarun`` + ``lambdarun.run(abs, -1, backend="covalent")``
    on the embedded local target with a fresh state folder: the stack starts, the function is
    created, its environment starts cold. The original: ``_covalent_reference.py`` with one
    task and no warm-up in a fresh process, against the already running stack (it has none
    of its own to start), its function made cold first (a configuration update retires its
    environments)."""
    lam = local_stack.client("lambda")
    rounds = 5 if full_bench else 1
    poll_freq = None if full_bench else 0.1
    ours: list[dict] = []
    theirs: list[dict] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMBDARUN_"))}

    def pair() -> None:
        state = tmp_path / f"state-{len(ours)}"
        env = {**base_env, "LAMBDARUN_TARGET": "local", "LAMBDARUN_LOCAL__STATE_DIR": str(state),
               "LAMBDARUN_PROGRESS": "false"}
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise AssertionError(f"first call failed ({out.returncode}):\n{out.stderr[-4000:]}")
        ours.append({**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": wall})
        lam.update_function_configuration(FunctionName=REFERENCE_FUNCTION,
                                          Environment={"Variables": {"COLD": uuid.uuid4().hex}})
        lam.get_waiter("function_updated_v2").wait(FunctionName=REFERENCE_FUNCTION,
                                                   WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
        start = time.perf_counter()
        ref = run_reference(reference_env, rounds=1, poll_freq=poll_freq, warmup=0)
        theirs.append({"first_call_s": ref["first_task_since_start_s"], "process_s": time.perf_counter() - start,
                       "polls": ref["polls_per_task"][0]})

    benchmark.pedantic(pair, rounds=rounds, iterations=1)
    first = [x["first_call_s"] for x in ours]
    ref_first = [x["first_call_s"] for x in theirs]
    headline.set(
        "covalent: first call of a fresh process (import, stack start, create, cold start, call)",
        statistics.median(first), "s", reference=statistics.median(ref_first),
        reference_name=f"{REFERENCE_NAME} (stack already running; cold function)",
        samples_s=[round(x, 3) for x in first], reference_samples_s=[round(x, 3) for x in ref_first],
        note=(f"{rounds} fresh processes each, interleaved. Ours from before `import lambdarun` to the result "
              f"(includes starting the embedded local stack, creating the function, its cold start): "
              f"{[round(x, 2) for x in first]} s; whole process incl. interpreter start and stack shutdown "
              f"{[round(x['process_s'], 2) for x in ours]} s. The original from its script's start to its first "
              f"result (cold function, no stack to start): {[round(x, 2) for x in ref_first]} s, whole process "
              f"{[round(x['process_s'], 2) for x in theirs]} s, polls {[x['polls'] for x in theirs]}."),
    )


def test_map_1000_tiny_tasks(benchmark: Any, headline: Any, record_rss: None, session: Session,
                             bench_size: Any, full_bench: bool) -> None:
    tasks = bench_size(1000, 20)

    def run_map() -> list[int]:
        return list(lambdarun.map(abs, range(-tasks, 0), backend="covalent", session=session))

    results = benchmark.pedantic(run_map, rounds=3 if full_bench else 1, iterations=1, warmup_rounds=0)
    assert results == list(range(tasks, 0, -1))
    median = headline.median_s()
    headline.set(f"covalent: map of {tasks} tiny tasks", None if median is None else tasks / median,
                 "tasks/s", target=MAP_TARGET_TASKS_PER_S, target_op=">=")


def test_10mb_argument(benchmark: Any, headline: Any, record_rss: None, session: Session,
                       bench_size: Any, full_bench: bool) -> None:
    size = bench_size(10 * MB, 300 * 1024)  # smoke: still over the 256 KiB inline limit (S3 path)
    blob = os.urandom(size)
    result = benchmark.pedantic(
        lambdarun.run, args=(len, blob), kwargs={"backend": "covalent", "session": session},
        rounds=5 if full_bench else 1, iterations=1,
    )
    assert result == size
    headline.set(f"covalent: round trip with a {size / MB:.3g} MiB argument (via S3)")
