"""`zerohop serve` as the benchmark runs it: a local-provider config with one target, the subprocess on
free ports, and its admin API (`/status`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.procs import Child, free_port


@dataclass(frozen=True, slots=True)
class Target:
    """One HTTPScaledObject and the LocalWorkload that runs its replicas (the demo app on one port)."""

    name: str
    min_replicas: int
    max_replicas: int
    metric: dict[str, Any]
    startup_delay: float
    scaledown_period: int = 300
    probe_period: float = 0.05
    # None: `<name>.bench`; empty: no hosts at all (the target takes every host, a `*` virtual host).
    hosts: tuple[str, ...] | None = None
    # The replica's command (`{port}` replaced); None: the demo app with `startup_delay`.
    command: tuple[str, ...] | None = None

    def documents(self, app_port: int) -> list[dict[str, Any]]:
        command = (
            list(self.command)
            if self.command is not None
            else [
                sys.executable,
                "-m",
                "extproc.dev.demoapp",
                "--port",
                "{port}",
                "--startup-delay",
                str(self.startup_delay),
            ]
        )
        hosts = [f"{self.name}.bench"] if self.hosts is None else list(self.hosts)
        return [
            {
                "apiVersion": "http.keda.sh/v1alpha1",
                "kind": "HTTPScaledObject",
                "metadata": {"name": self.name, "namespace": "default"},
                "spec": {
                    **({"hosts": hosts} if hosts else {}),
                    "scaleTargetRef": {"name": self.name, "service": self.name, "port": 8080},
                    "replicas": {"min": self.min_replicas, "max": self.max_replicas},
                    "scalingMetric": self.metric,
                    "scaledownPeriod": self.scaledown_period,
                },
            },
            {
                "apiVersion": "zerohop.dev/v1alpha1",
                "kind": "LocalWorkload",
                "metadata": {"name": self.name, "namespace": "default"},
                "spec": {
                    "command": command,
                    "port": app_port,
                    "readinessProbe": {"httpGet": {"path": "/"}, "periodSeconds": self.probe_period},
                },
            },
        ]


@dataclass
class Zerohop:
    """A `python -m extproc serve` child with one target; `extra_args` are further serve flags."""

    target: Target
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    ext_proc_port: int = field(default_factory=free_port)
    scaler_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    app_port: int = field(default_factory=free_port)
    child: Child | None = None

    @property
    def xds_dir(self) -> Path:
        return self.workdir / "xds"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yaml"
        config.write_text(yaml.safe_dump_all(self.target.documents(self.app_port), sort_keys=False))
        argv = [
            "-m", "extproc", "serve",
            "--config", str(config),
            "--state-dir", str(self.workdir),
            "--xds-dir", str(self.xds_dir),
            "--ext-proc-address", f"127.0.0.1:{self.ext_proc_port}",
            "--scaler-address", f"127.0.0.1:{self.scaler_port}",
            "--admin-address", f"127.0.0.1:{self.admin_port}",
            "--log-level", "warning",
            *self.extra_args,
        ]  # fmt: skip
        self.child = Child("zerohop", argv, self.workdir / "zerohop.log")
        await self.child.start()
        await self.child.wait_http_ok(self.admin_url + "/readyz")

    async def status(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(self.admin_url + "/status") as response:
            response.raise_for_status()
            document: dict[str, Any] = await response.json()
            return document

    async def target_status(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        status = await self.status(session)
        targets: list[dict[str, Any]] = status["targets"]
        return targets[0]

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.stop()
