"""What a process that only talks to a local stack imports: a Lambda environment's runtime
(its session loads the ``local`` target plugin) and a caller whose stack runs in its own
process import neither the service's modules nor moto's server; they pay for them in every
cold start otherwise (issue 20: `import lambdarun.local.plugin` 210 -> 46 ms of CPU; a
cold environment ~70 ms less in all, as it imports botocore later for its own client)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SERVER_MODULES = (
    "lambdarun.local.service",
    "lambdarun.local.api",
    "lambdarun.local.validation",
    "lambdarun.local.scheduler",
    "lambdarun.local.moto_server",
    "lambdarun.local.persist",
    "moto",
    "werkzeug",
)


def imported_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ), check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_target_plugin_and_an_attached_stack_import_no_server():
    modules = imported_after(
        "import lambdarun.local.plugin\n"
        "from lambdarun.local.stack import LocalStack\n"
        "from lambdarun.local import StackCredentials, Endpoints, default_state_dir\n"
        "LocalStack.attached(Endpoints(lambda_='http://127.0.0.1:1', moto='http://127.0.0.1:2'),\n"
        "                    credentials=StackCredentials.generate())\n"
    )
    assert "lambdarun.local.plugin" in modules and "lambdarun.local.stack" in modules
    assert modules.isdisjoint(SERVER_MODULES), sorted(modules.intersection(SERVER_MODULES))


def test_starting_a_stack_imports_the_servers_and_the_package_names_resolve(tmp_path):
    import lambdarun.local as local
    from lambdarun.local import LambdaService, LocalStack, ServiceOptions
    from lambdarun.local.stack import NoDelayQuietHandler

    assert LambdaService.__module__ == "lambdarun.local.service"
    assert LocalStack.__module__ == "lambdarun.local.stack"
    assert ServiceOptions.__module__ == "lambdarun.local.options"
    assert NoDelayQuietHandler.__module__ == "lambdarun.local.moto_server"
    assert set(local.__all__) <= set(dir(local)) | set(local._OWNERS)
    with pytest.raises(AttributeError):
        local.NoSuchThing  # noqa: B018
    with LocalStack(state_dir=tmp_path / "state") as stack:
        assert stack.service is not None and stack.service.url == stack.endpoints.lambda_
