"""zerohop's gRPC core settings: applied before grpc loads, never over an operator's own, and known to the
installed grpcio (which reports an experiment it does not know at startup)."""

from __future__ import annotations

import os
import subprocess
import sys

from extproc.app import grpcenv

_START_A_SERVER = """
import asyncio, grpc
async def main():
    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await server.stop(None)
asyncio.run(main())
"""


def test_defaults_fill_only_what_is_unset() -> None:
    environ = {"GRPC_EXPERIMENTS": ""}
    applied = grpcenv.apply(environ)
    assert environ["GRPC_EXPERIMENTS"] == ""  # the operator's choice, even empty, stands
    assert environ["GRPC_ENABLE_FORK_SUPPORT"] == "false"
    assert applied == environ


def test_the_cli_module_loads_without_grpc_so_main_can_set_them_first() -> None:
    code = "import sys, extproc.app.cli; print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _grpc_stderr(experiments: str) -> str:
    env = {**os.environ, "GRPC_EXPERIMENTS": experiments, "GRPC_VERBOSITY": "error"}
    result = subprocess.run(
        [sys.executable, "-c", _START_A_SERVER], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return result.stderr


def test_the_installed_grpcio_knows_the_experiments() -> None:
    assert "Unknown experiment" in _grpc_stderr("-no_such_experiment_zerohop")  # the check can fail
    assert "Unknown experiment" not in _grpc_stderr(grpcenv.DEFAULTS["GRPC_EXPERIMENTS"])
