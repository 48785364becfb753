"""lambdarun's temporal backend: Temporal workers that live for one Lambda invocation.

* :mod:`lambdarun_temporal.lambda_worker`: ``run_worker`` / ``LambdaWorkerConfig``, usable
  on its own as the Lambda handler of any Temporal worker;
* :mod:`lambdarun_temporal.devserver`: the real Temporal dev server, started on demand;
* :mod:`lambdarun_temporal.plugin`: the lambdarun hooks (backend ``temporal``).
"""

__version__ = "0.1.0"
