"""What Kubernetes events cost zerohop's event loop at 1k and 10k targets.

`python bench/kubeevents.py [N ...]` (run as a file, so `PYTHONPATH` alone picks the zerohop being measured:
`PYTHONPATH=$PWD` for this tree, another checkout's root for a before/after comparison). For each N it
starts the API emulator (tests/kubeemu) in a child process holding N targets, each an HTTPScaledObject, a
Service and an EndpointSlice, so the emulator's own work is not on the measured loop. In this process it runs
the Kubernetes provider and the core alone (no reconciler: nothing here writes), with a probe task that
sleeps 1 ms and records how late it wakes: the loop's longest stall. Measured, as JSON on stdout:
- start -> ready: `provider.start()` until it returns and reports ready, and the longest stall meanwhile;
- one status-only update, one spec change (a new host): the longest stall from the write until the update
  is in the informer's cache plus `SETTLE` seconds (whatever the provider schedules from it runs by then);
- a burst of `BURST` EndpointSlice updates (one per Service, each turning an endpoint ready or not): the
  same, from the first write until the last update is in the cache plus `SETTLE`;
each with the longest garbage collection in the same window (`gc_max`), a stall no event handler causes;
and the same window with no event at all (`idle_stall_ms`): the floor the others stand on.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SETTLE = 0.2
REPEATS = 5
BURST = 100
NAMESPACE = "bench"
SIZES = (1_000, 10_000)
ROOT = Path(__file__).resolve().parents[1]


def _httpso(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": f"app-{index}", "namespace": NAMESPACE},
        "spec": {
            "hosts": [f"app-{index}.bench.example"],
            "scaleTargetRef": {
                "name": f"app-{index}",
                "kind": "Deployment",
                "apiVersion": "apps/v1",
                "service": f"app-{index}",
                "port": 8080,
            },
            "replicas": {"min": 0, "max": 5},
        },
    }


def _service(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"app-{index}", "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]},
    }


def _slice(index: int, ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"app-{index}-x",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": f"app-{index}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [f"10.{index // 65536}.{index // 256 % 256}.{index % 256}"],
                       "conditions": {"ready": ready}}],
    }  # fmt: skip


# --- the emulator's side (child process) ---------------------------------------------------------------


async def _serve(targets: int) -> None:
    from tests.kubeemu import KubeEmulator

    async with KubeEmulator(bookmark_interval=1.0) as emu:
        for index in range(targets):
            emu.create(_httpso(index))
            emu.create(_service(index))
            emu.create(_slice(index, False))
        print(f"ready {emu.url}", flush=True)
        loop = asyncio.get_running_loop()
        ready = False
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, *args = line.split()
            if command == "status":
                patch = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": args[0]}]}}
                done = emu.patch(
                    "http.keda.sh/v1alpha1", "HTTPScaledObject", f"app-{args[0]}", patch, NAMESPACE,
                    subresource="status",
                )  # fmt: skip
            elif command == "spec":
                patch = {"spec": {"hosts": [f"app-{args[0]}-new.bench.example"]}}
                done = emu.patch("http.keda.sh/v1alpha1", "HTTPScaledObject", f"app-{args[0]}", patch, NAMESPACE)
            else:  # slices FIRST
                ready = not ready
                first = int(args[0])
                for index in range(first, first + BURST):
                    done = emu.update(_slice(index, ready))
            print(done["metadata"]["resourceVersion"], flush=True)


# --- zerohop's side ------------------------------------------------------------------------------------


class StallProbe:
    """Sleeps 1 ms at a time and keeps the longest lateness since the last `reset`, and the longest
    garbage collection meanwhile (a full collection over 10k targets' documents is a stall of its own)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_gc = 0.0
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.worst_gc = max(self.worst_gc, time.perf_counter() - self._gc_started)

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - started - 0.001)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def reset(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst * 1e3

    def reset_gc(self) -> float:
        worst, self.worst_gc = self.worst_gc, 0.0
        return worst * 1e3


async def _until(check: Any) -> None:
    # Polled: the informers have no hook to wait on, in either tree a before/after run compares.
    while not check():  # noqa: ASYNC110
        await asyncio.sleep(0.001)


async def _measure(targets: int) -> dict[str, Any]:
    from kubernetes.aio import client

    from extproc.core.engine import Core
    from extproc.core.httpso import TargetKey
    from extproc.providers.kubernetes.api import KubeApi
    from extproc.providers.kubernetes.provider import KubernetesOptions, KubernetesProvider

    # The emulator is always this tree's, whichever zerohop PYTHONPATH names.
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(targets),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.stdin is not None
    assert child.stdout is not None
    stdin, stdout = child.stdin, child.stdout

    async def ask(command: str) -> int:
        stdin.write(command.encode() + b"\n")
        return int(await stdout.readline())

    try:
        url = (await stdout.readline()).decode().split()[1]
        api = KubeApi(client.ApiClient(client.Configuration(host=url)))
        options = KubernetesOptions(
            namespaces=(NAMESPACE,), pod_name="bench", pod_namespace=NAMESPACE, pod_ip="127.0.0.1",
            service_name="zerohop", scaler_port=9090, scale_on_wake=False, leader_election=False,
            propagation_delay=0.0, envoy_admin=(), gateway_namespace=NAMESPACE, gateway_selector="app=gw",
            gateway_stats_port=0, reconcile=None, warm_path=None, stats_interval=1.0, gateway_probe_port=8080,
        )  # fmt: skip
        provider = KubernetesProvider(api, options)
        core = Core(hold_timeout=30, max_held_per_target=10, max_held_total=1000)
        probe = StallProbe()
        probe.start()
        await asyncio.sleep(0.05)
        probe.reset()
        started = time.perf_counter()
        await provider.start(core)
        ready = time.perf_counter() - started
        assert provider.ready()
        assert len(core.registry) == targets
        result: dict[str, Any] = {
            "targets": targets,
            "ready_s": round(ready, 3),
            "start_stall_ms": probe.reset(),
            "start_longest_gc_ms": probe.reset_gc(),
        }
        await asyncio.sleep(1.0)

        def cached(informers: list[Any], name: str, version: int) -> Any:
            # One object looked at per poll: a scan of all 10k cached objects every millisecond was the
            # bench's own stall (about 5 ms at 10k), counted as zerohop's.
            def seen() -> bool:
                objects = (i.cache.get((NAMESPACE, name)) for i in informers)
                return any(int(obj["metadata"]["resourceVersion"]) >= version for obj in objects if obj is not None)

            return seen

        httpsos = provider._httpso_informers  # the informers' caches: what the bench waits on
        slices = provider._slice_informers  # the EndpointSlice informers
        idle = []
        for _ in range(REPEATS):
            probe.reset()
            await asyncio.sleep(SETTLE)
            idle.append(probe.reset())
        # The floor every figure below stands on: a window as long with no event at all (the machine's
        # other load, timer slack).
        result["idle_stall_ms"] = {"median": statistics.median(idle), "max": max(idle)}
        for name, command in (("status_update", "status"), ("spec_change", "spec")):
            stalls, gcs = [], []
            for repeat in range(REPEATS):
                index = targets // 2 + repeat
                probe.reset()
                probe.reset_gc()
                version = await ask(f"{command} {index}")
                await _until(cached(httpsos, f"app-{index}", version))
                await asyncio.sleep(SETTLE)
                stalls.append(probe.reset())
                gcs.append(probe.reset_gc())
                if command == "spec":
                    state = core.registry.get(TargetKey(NAMESPACE, f"app-{index}"))
                    assert state is not None
                    assert state.spec.hosts == (f"app-{index}-new.bench.example",)
            result[f"{name}_stall_ms"] = {"median": statistics.median(stalls), "max": max(stalls), "gc_max": max(gcs)}
        stalls, gcs = [], []
        for repeat in range(REPEATS):
            probe.reset()
            probe.reset_gc()
            version = await ask(f"slices {repeat * BURST}")
            # The burst's last slice: the watch delivers in order, so the others are in by then.
            await _until(cached(slices, f"app-{repeat * BURST + BURST - 1}-x", version))
            await asyncio.sleep(SETTLE)
            stalls.append(probe.reset())
            gcs.append(probe.reset_gc())
        result[f"slice_burst_{BURST}_stall_ms"] = {
            "median": statistics.median(stalls),
            "max": max(stalls),
            "gc_max": max(gcs),
        }
        await provider.stop()
        await api.close()
        return {key: _rounded(value) for key, value in result.items()}
    finally:
        stdin.close()
        await asyncio.wait_for(child.wait(), 30)


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: round(item, 1) for key, item in value.items()}
    return round(value, 1) if isinstance(value, float) else value


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(_serve(int(sys.argv[2])))
        return
    sizes = [int(arg) for arg in sys.argv[1:]] or list(SIZES)
    for targets in sizes:
        print(json.dumps(asyncio.run(_measure(targets))), flush=True)


if __name__ == "__main__":
    main()
