"""zerohop as a process: SIGTERM drains held requests and exits in bounded time; bad input to the CLI is a
clear error, not a traceback; `zerohop demo` (what `make demo` runs) completes its scenario."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy.adminapi import EnvoyAdmin
from extproc.envoy.config import GatewayPorts, istio_cluster_name, local_bootstrap
from extproc.providers.local.replicas import port_is_free
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
    assert re.search(r"status page  http://127\.0\.0\.1:\d+/ ", out), out  # the page, not only /status JSON
    assert "x-zerohop-cold-start: true" in out
    assert "<- 200 after" in out
    assert "replicas: 3 desired, 3 ready" in out
    assert "back to zero replicas" in out
    # The warm path opens while the demo's traffic flows and is gated again before the scale to zero.
    lines = out.splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    opened = first("warm path: open (the gateway loaded it)")
    gated = first("warm path: gated (the gateway loaded it)")
    at_zero = max(i for i, line in enumerate(lines) if "replicas: 0 desired, 0 ready" in line)
    assert first("-> cold request") < opened < gated < at_zero, out
    assert "  warm path: open at t+" in out
    burst = lines[first("<- burst done")]
    counts = re.search(r"(\d+) of (\d+) asked zerohop", burst)
    assert counts is not None, burst
    asked, sent = map(int, counts.groups())
    assert asked < sent / 2, burst  # most of the burst went past zerohop


# --- replicas outlive zerohop (issue 10, item 11) ----------------------------------------------------------


class Zerohop:
    """`zerohop serve` as a process on a given state dir and ext_proc port (a restart keeps both)."""

    def __init__(self, config: Path, state: Path, ext_proc: int, *extra: str) -> None:
        self.config, self.state, self.ext_proc, self.extra = config, state, ext_proc, extra
        self.admin = free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Zerohop:
        self.process = await asyncio.create_subprocess_exec(
            *ZEROHOP, "serve",
            "--config", str(self.config),
            "--state-dir", str(self.state),
            "--xds-dir", str(self.state / "xds"),
            "--ext-proc-address", f"127.0.0.1:{self.ext_proc}",
            "--scaler-address", "127.0.0.1:0",
            "--admin-address", f"127.0.0.1:{self.admin}",
            "--drain-timeout", "2s",
            *self.extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        return self

    async def target(self, name: str) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{self.admin}/status") as r:
                targets = (await r.json())["targets"]
        except aiohttp.ClientError:
            return None
        return next((t for t in targets if t["name"] == f"default/{name}"), None)

    async def wait_routable(self, name: str) -> None:
        async def routable() -> bool:
            target = await self.target(name)
            return target is not None and target["routable"]

        await wait_for(routable, 20, 0.05, what=f"{name} routable")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def terminate(self) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(self.process.stdout.read(), 20)).decode()
        assert await self.process.wait() == 0, output
        return output

    def records(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads((self.state / "replicas.json").read_text())
        return result


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_crashed_zerohops_replicas_keep_serving_and_the_next_one_adopts_them(tmp_path: Path) -> None:
    config = tmp_path / "zerohop.yaml"
    config.write_text(httpso("warm", replicas="{min: 1, max: 1}") + app("warm"))
    envoy_admin, listen, ext_proc = free_port(), free_port(), free_port()
    state = tmp_path / "state"
    gateway = ("--envoy-admin", f"http://127.0.0.1:{envoy_admin}")
    XdsFiles(state / "xds").prepare()
    bootstrap = local_bootstrap(
        GatewayPorts("127.0.0.1", listen, envoy_admin, "127.0.0.1", ext_proc), state / "xds", max_message_timeout=65
    )
    first = await Zerohop(config, state, ext_proc, *gateway).start()
    async with aiohttp.ClientSession() as session, EnvoyProcess(bootstrap, envoy_admin, workdir=tmp_path / "envoy"):
        await first.wait_routable("warm")
        [record] = first.records()
        statuses: Counter[int] = Counter()
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                async with session.get(f"http://127.0.0.1:{listen}/", headers={"Host": "warm.test"}) as reply:
                    statuses[reply.status] += 1
                await asyncio.sleep(0.01)

        loader = asyncio.create_task(load())
        await wait_for(lambda: statuses[200] >= 20, 10, 0.01, what="warm traffic")
        await first.kill()
        during = sum(statuses.values())
        await wait_for(lambda: sum(statuses.values()) >= during + 50, 10, 0.01, what="traffic while zerohop is down")
        assert running(record["pid"]), "the replica outlives zerohop"
        second = await Zerohop(config, state, ext_proc, *gateway).start()
        await second.wait_routable("warm")
        after = sum(statuses.values())
        await wait_for(lambda: sum(statuses.values()) >= after + 50, 10, 0.01, what="traffic after the restart")
        stop.set()
        await loader
        assert statuses == {200: statuses[200]}, statuses
        assert second.records() == [record], "the same replica, adopted"
        output = await second.terminate()
    assert f"adopted (pid {record['pid']})" in output
    assert not running(record["pid"]), "a clean stop stops the replicas"
    assert second.records() == []


async def test_sigterm_stops_replicas_only_after_their_in_flight_requests(tmp_path: Path) -> None:
    config = tmp_path / "zerohop.yaml"
    port = free_port()
    # Every request takes 1.5 s (readiness probes too: the probe only connects).
    config.write_text(
        httpso("slow", replicas="{min: 1, max: 1}")
        + f"""
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {{name: slow}}
spec:
  command: [{sys.executable}, -m, extproc.dev.demoapp, --port, "{{port}}", --work, "1.5"]
  port: {port}
  readinessProbe: {{tcpSocket: {{}}, periodSeconds: 0.02}}
"""
    )
    envoy_admin, listen, ext_proc = free_port(), free_port(), free_port()
    state = tmp_path / "state"
    XdsFiles(state / "xds").prepare()
    bootstrap = local_bootstrap(
        GatewayPorts("127.0.0.1", listen, envoy_admin, "127.0.0.1", ext_proc), state / "xds", max_message_timeout=65
    )
    gateway = ("--envoy-admin", f"http://127.0.0.1:{envoy_admin}", "--drain-timeout", "6s")
    zerohop = await Zerohop(config, state, ext_proc, *gateway).start()
    envoy = EnvoyProcess(bootstrap, envoy_admin, workdir=tmp_path / "envoy")
    async with aiohttp.ClientSession() as session, envoy, EnvoyAdmin(f"http://127.0.0.1:{envoy_admin}") as admin:
        await zerohop.wait_routable("slow")

        async def get() -> int:
            async with session.get(f"http://127.0.0.1:{listen}/", headers={"Host": "slow.test"}) as reply:
                return reply.status

        slow = [asyncio.create_task(get()) for _ in range(3)]
        cluster = istio_cluster_name("slow", "default", 8080)  # the httpso's scaleTargetRef

        async def three_in_flight() -> bool:
            return await admin.active_requests(cluster) == 3

        await wait_for(three_in_flight, 10, 0.01, what="3 requests at the replica")
        output = await zerohop.terminate()
        assert await asyncio.gather(*slow) == [200, 200, 200], output


async def test_a_shell_wrapped_replica_leaves_no_orphan_holding_its_port(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "zerohop.yaml"
    config.write_text(
        httpso("wrapped", replicas="{min: 1, max: 1}")
        + f"""
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {{name: wrapped}}
spec:
  command: [sh, -c, "{sys.executable} -m extproc.dev.demoapp --port {{port}} & wait"]
  port: {port}
  readinessProbe: {{httpGet: {{path: /}}, periodSeconds: 0.02}}
"""
    )
    state = tmp_path / "state"
    first = await Zerohop(config, state, free_port()).start()
    await first.wait_routable("wrapped")
    [record] = first.records()
    await first.kill()
    # The shell dies too (as it did when zerohop took it along); the app it started still holds the port.
    os.kill(record["pid"], signal.SIGKILL)
    await wait_for(lambda: not running(record["pid"]), 5, 0.01, what="the shell gone")
    assert not port_is_free("127.0.0.1", port)
    second = await Zerohop(config, state, free_port()).start()
    await second.wait_routable("wrapped")
    [new] = second.records()
    assert new["pid"] != record["pid"]
    assert new["port"] == port
    output = await second.terminate()
    assert "stopped 1 leftover process(es)" in output
    assert port_is_free("127.0.0.1", port), "stopping a replica stops its whole process group"


async def test_two_zerohops_cannot_share_a_state_dir(tmp_path: Path) -> None:
    config = tmp_path / "zerohop.yaml"
    config.write_text(httpso("a") + never_ready("a"))
    first = await Zerohop(config, tmp_path / "state", free_port()).start()
    lock = tmp_path / "state" / "zerohop.lock"
    await wait_for(lambda: lock.exists() and lock.read_text() != "", 10, 0.02, what="the first holds the lock")
    second = await Zerohop(config, tmp_path / "state", free_port()).start()
    assert second.process is not None
    assert second.process.stdout is not None
    assert await asyncio.wait_for(second.process.wait(), 20) == 2
    assert "is in use by another zerohop" in (await second.process.stdout.read()).decode()
    await first.terminate()
