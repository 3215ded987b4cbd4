"""zerohop as a process: SIGTERM drains held requests and exits in bounded time; bad input to the CLI is a
clear error, not a traceback; `zerohop demo` (what `make demo` runs) completes its scenario."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy.config import GatewayPorts, local_bootstrap
from extproc.providers.local.xds_files import XdsFiles
from tests.helpers import free_port, wait_for
from tests.integration.stack import app, httpso, never_ready

pytestmark = pytest.mark.envoy

ZEROHOP = [sys.executable, "-m", "extproc"]


async def test_sigterm_answers_held_requests_and_exits_within_the_drain_time(tmp_path: Path) -> None:
    config = tmp_path / "zerohop.yaml"
    config.write_text(
        httpso("never") + never_ready("never") + httpso("warm", replicas="{min: 1, max: 1}") + app("warm")
    )
    ext_proc, scaler, admin, envoy_admin, listen = (free_port() for _ in range(5))
    process = await asyncio.create_subprocess_exec(
        *ZEROHOP, "serve",
        "--config", str(config),
        "--xds-dir", str(tmp_path / "xds"),
        "--state-dir", str(tmp_path),
        "--envoy-admin", f"http://127.0.0.1:{envoy_admin}",
        "--ext-proc-address", f"127.0.0.1:{ext_proc}",
        "--scaler-address", f"127.0.0.1:{scaler}",
        "--admin-address", f"127.0.0.1:{admin}",
        "--drain-timeout", "3s",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    # What `zerohop envoy-bootstrap` does, so the gateway may start before zerohop has written its files.
    XdsFiles(tmp_path / "xds").prepare()
    bootstrap = local_bootstrap(
        GatewayPorts("127.0.0.1", listen, envoy_admin, "127.0.0.1", ext_proc), tmp_path / "xds", max_message_timeout=65
    )
    async with aiohttp.ClientSession() as session, EnvoyProcess(bootstrap, envoy_admin, workdir=tmp_path / "envoy"):

        async def status() -> dict[str, object]:
            async with session.get(f"http://127.0.0.1:{admin}/status") as response:
                result: dict[str, object] = await response.json()
                return result

        async def ready() -> bool:
            try:
                targets = (await status())["targets"]
            except aiohttp.ClientError:
                return False
            return any(t["name"] == "default/warm" and t["routable"] for t in targets)  # type: ignore[attr-defined,index]

        await wait_for(ready, 15, 0.05, what="zerohop up with warm routable")

        async def get(host: str) -> tuple[int, str, str]:
            async with session.get(f"http://127.0.0.1:{listen}/", headers={"Host": host}) as response:
                return response.status, response.headers.get("retry-after", ""), await response.text()

        held = [asyncio.create_task(get("never.test")) for _ in range(4)]

        async def four_held() -> bool:
            return (await status())["heldTotal"] == 4

        await wait_for(four_held, 10, 0.02, what="4 held")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        replies = await asyncio.wait_for(asyncio.gather(*held), 5)
        assert Counter(r[0] for r in replies) == {503: 4}
        assert all(r[1] == "5" and "shutting down" in r[2] for r in replies)
        assert time.monotonic() - signalled < 1.0
        await asyncio.wait_for(process.wait(), 3 + 5 + 2)  # drain timeout + replica grace + margin
        assert process.returncode == 0
        assert process.stdout is not None
        output = (await process.stdout.read()).decode()
        assert "answered 4 held request(s) for shutdown" in output
        assert "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve"], "--config (ZEROHOP_CONFIG) is required"),
        (["serve", "--config", "/nonexistent.yaml"], "cannot read"),
        (["serve", "--hold-timeout", "soon", "--config", "x"], "--hold-timeout: not a duration"),
    ],
)
def test_cli_errors_are_one_clear_line(args: list[str], message: str) -> None:
    result = subprocess.run([*ZEROHOP, *args], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_yaml_config_is_reported_with_its_position(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nspec: {hosts: [a\n")
    result = subprocess.run(
        [*ZEROHOP, "serve", "--config", str(config), "--admin-address", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert f"{config}:4:1: not valid YAML" in result.stderr


def test_serve_without_state_dir_removes_its_temporary_directory_after_a_failed_start(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = subprocess.run(
        [*ZEROHOP, "serve", "--config", str(tmp_path / "missing.yaml"), "--admin-address", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert result.returncode == 2
    assert list(temp.iterdir()) == []


async def test_serve_without_state_dir_removes_its_temporary_directory_when_it_stops(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    config = tmp_path / "zerohop.yaml"
    config.write_text(httpso("a") + never_ready("a"))
    admin = free_port()
    process = await asyncio.create_subprocess_exec(
        *ZEROHOP, "serve",
        "--config", str(config),
        "--ext-proc-address", "127.0.0.1:0",
        "--scaler-address", "127.0.0.1:0",
        "--admin-address", f"127.0.0.1:{admin}",
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{admin}/readyz") as answer:
                return answer.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(ready, 15, 0.05, what="zerohop ready")
    assert [p.name[:8] for p in temp.iterdir()] == ["zerohop-"]
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 15) == 0
    assert list(temp.iterdir()) == []


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "zerohop.yaml"
    config.write_text(httpso("a") + never_ready("a"))
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*ZEROHOP, "serve", "--config", str(config), "--admin-address", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert f"--admin-address: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_help_explains_itself() -> None:
    top = subprocess.run([*ZEROHOP, "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert "serve" in top
    assert "demo" in top
    assert "envoyfilter" in top
    serve = subprocess.run([*ZEROHOP, "serve", "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert "ZEROHOP_HOLD_TIMEOUT" in serve
    assert "--max-held-per-target" in serve


def test_demo_runs_its_scenario_and_exits(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [*ZEROHOP, "demo", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == [], "the demo removes its temporary directory"
    out = result.stdout
    assert "x-zerohop-cold-start: true" in out
    assert "<- 200 after" in out
    assert "replicas: 3 desired, 3 ready" in out
    assert "back to zero replicas" in out
