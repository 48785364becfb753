"""Drive the original Covalent AWS Lambda executor (``covalent-awslambda-plugin`` 0.22.0).

Run by ``test_covalent.py`` in a subprocess, so Covalent's config, its process-wide AWS
environment and its peak RSS stay out of the benchmark process::

    python benchmarks/_covalent_reference.py --function F --bucket B --rounds N [--poll-freq S]

The environment must point boto3 at the local stack (``AWS_ENDPOINT_URL_LAMBDA``/``_S3``,
region, dummy credentials) and ``COVALENT_CONFIG_DIR`` at a scratch directory.

What is driven, exactly as Covalent's dispatcher does it (``covalent_dispatcher/_core/
runner.py``): the executor is built with its own constructor and defaults (only
``function_name``, ``s3_bucket_name``, ``region`` and optionally ``poll_freq`` given),
``_init_runtime(loop=...)`` is called on the running loop, then
``await executor._execute(function, args, kwargs, dispatch_id, results_dir, node_id)``,
which runs the plugin's own ``setup`` / ``run`` / ``teardown``: ``run`` pickles the call,
uploads it to S3 with a new boto3 session, invokes the function with ``InvocationType=Event``,
polls ``head_object`` every ``poll_freq`` seconds, then downloads the result. The only
difference from a real dispatch: the function is a plain callable (``abs``) instead of the
dispatcher's ``wrapper_fn`` around a ``TransportableObject``. Each round uses a fresh
``dispatch_id`` (the plugin derives its S3 keys from it, so reusing one would return the
previous round's result without running).

With ``--serve`` it runs one task per ``task [SECONDS]`` line on stdin and answers each with
``{"elapsed_s": ..., "polls": ...}`` (the benchmark interleaves these with its own calls).
Otherwise it prints one JSON line: ``{"samples_s": [...], "polls_per_task": [...], "peak_rss_mib": ...,
"poll_freq": ...}`` (``polls_per_task`` counts ``get_status`` calls, i.e. head_object polls:
1 means the first poll found the result and no ``poll_freq`` sleep was paid).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
import uuid


def _count_polls(executor: object) -> list[int]:
    """Count the executor's ``get_status`` calls (its head_object polls) without changing them."""
    counter = [0]
    original = executor.get_status  # type: ignore[attr-defined]

    async def get_status(object_key: str) -> bool:
        counter[0] += 1
        return await original(object_key)

    executor.get_status = get_status  # type: ignore[attr-defined]
    return counter


def sleepy_abs(x: int, seconds: float) -> int:
    """A task that takes ``seconds`` (pickled by value: it is defined in ``__main__``)."""
    time.sleep(seconds)
    return abs(x)


class Driver:
    """One executor, driven as Covalent's dispatcher drives it, one task per :meth:`task`."""

    def __init__(self, args: argparse.Namespace) -> None:
        from covalent_awslambda_plugin import AWSLambdaExecutor

        options = {"function_name": args.function, "s3_bucket_name": args.bucket, "region": args.region}
        if args.poll_freq is not None:
            options["poll_freq"] = args.poll_freq
        self.executor = AWSLambdaExecutor(**options)
        self.results_dir = tempfile.mkdtemp(prefix="covalent-results-")
        self.executor.cache_dir = tempfile.mkdtemp(prefix="covalent-cache-")
        self.executor._init_runtime(loop=asyncio.get_running_loop())
        self.polls = _count_polls(self.executor)
        self.node = 0

    async def task(self, seconds: float = 0.0) -> dict:
        self.node += 1
        i = self.node
        self.polls[0] = 0
        function, args = (abs, [-i]) if not seconds else (sleepy_abs, [-i, seconds])
        start = time.perf_counter()
        output, _stdout, _stderr, status = await self.executor._execute(
            function=function, args=args, kwargs={}, dispatch_id=str(uuid.uuid4()),
            results_dir=self.results_dir, node_id=i,
        )
        elapsed = time.perf_counter() - start
        if output != i:
            raise SystemExit(f"reference executor returned {output!r} (status {status}) for task {i}")
        return {"elapsed_s": elapsed, "polls": self.polls[0]}


async def _main(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    driver = Driver(args)
    if args.serve:
        # one task per command line ("task SECONDS"), one JSON line back: lets the benchmark
        # interleave the reference's tasks with lambdarun's (ABAB...)
        loop = asyncio.get_running_loop()
        print(json.dumps({"ready": True, "poll_freq": driver.executor.poll_freq}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, *rest = line.split()
            if command != "task":
                raise SystemExit(f"unknown command {command!r}")
            print(json.dumps(await driver.task(float(rest[0]) if rest else 0.0)), flush=True)
        return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    samples: list[float] = []
    polls_per_task: list[int] = []
    first = None
    for i in range(args.warmup + args.rounds):
        one = await driver.task(args.task_seconds)
        if i == 0:
            first = time.perf_counter() - started
        if i >= args.warmup:
            samples.append(one["elapsed_s"])
            polls_per_task.append(one["polls"])
    return {
        "samples_s": samples,
        "poll_freq": driver.executor.poll_freq,
        "polls_per_task": polls_per_task,
        "first_task_since_start_s": first,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--poll-freq", type=float, default=None, help="default: the plugin's (5 s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--task-seconds", type=float, default=0.0, help="0: abs(-n); else sleep this long first")
    parser.add_argument("--serve", action="store_true", help="run one task per 'task [SECONDS]' line on stdin")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
