# Ported from aws-durable-execution-sdk-python 3.0.0 (constants.py), Apache-2.0,
# Copyright Amazon.com, Inc. or its affiliates. Only the imports were changed
# (aws_durable_execution_sdk_python -> lambdarun_durable).
"""Shared internal constants."""

# Maximum checkpoint payload size in bytes (256KB).
# Payloads exceeding this limit trigger ReplayChildren mode in child contexts,
# and overflow-to-file behavior in FileSystemSerDes.
CHECKPOINT_SIZE_LIMIT_BYTES = 256 * 1024
