"""lambdarun-covalent: the ``covalent`` backend of lambdarun and a Covalent AWS Lambda executor.

* ``lambdarun.run(f, *args, backend="covalent")`` (also ``submit`` and ``map``) runs through
  :class:`~lambdarun_covalent.backend.CovalentBackend`.
* :class:`lambdarun_covalent.executor.AWSLambdaExecutor` is a drop-in replacement of Covalent's
  ``AWSLambdaExecutor`` (``ct.electron(executor="awslambda")`` when Covalent is installed).

Importing this package does not import Covalent; importing ``lambdarun_covalent.executor``
does, when it is installed.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["CovalentBackend", "CovalentConfig", "AWSLambdaExecutor", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: Covalent takes ~1 s to import
    if name == "CovalentBackend":
        from lambdarun_covalent.backend import CovalentBackend

        return CovalentBackend
    if name == "CovalentConfig":
        from lambdarun_covalent.config import CovalentConfig

        return CovalentConfig
    if name == "AWSLambdaExecutor":
        from lambdarun_covalent.executor import AWSLambdaExecutor

        return AWSLambdaExecutor
    raise AttributeError(f"module 'lambdarun_covalent' has no attribute {name!r}")
