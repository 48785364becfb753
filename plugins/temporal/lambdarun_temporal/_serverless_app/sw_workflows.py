"""Workflow and activity of the Serverless Workers tests and benchmark (the function's code)."""

from __future__ import annotations

import os
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import VersioningBehavior


@activity.defn
async def which_build(name: str) -> str:
    """Which function ran this: its build id (an environment variable of the function)."""
    return f"{name}@{os.environ['SW_BUILD_ID']}"


@workflow.defn(versioning_behavior=VersioningBehavior.PINNED)
class ServerlessHello:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(which_build, name, start_to_close_timeout=timedelta(seconds=30))
