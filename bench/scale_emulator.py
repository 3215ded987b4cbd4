"""`python -m bench.scale_emulator`: the API emulator as the scale benchmark's own process, filled with N targets.

Each target `tNNNNN` in namespace `bench`: an HTTPScaledObject (host `tNNNNN.scale.test`), a Deployment at 0,
its Service and an EndpointSlice without endpoints; plus one warm target `probe` (one ready endpoint) that
the benchmark's ext_proc calls go to. A process of its own, so serving lists and watches never runs on the
benchmark's event loop (which times the calls) nor on zerohop's.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from tests.kube.harness import httpso, workload
from tests.kubeemu import KubeEmulator

NAMESPACE = "bench"
PROBE = "probe"
SLICES = "discovery.k8s.io/v1"


def target_name(index: int) -> str:
    return f"t{index:05}"


def endpoint_slice(service: str, ready_ips: list[str], *, not_ready_ips: list[str] | None = None) -> dict[str, Any]:
    endpoints = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ready_ips]
    endpoints += [{"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready_ips or []]
    return {
        "apiVersion": SLICES,
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-abcde",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 18080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def scaled(name: str) -> dict[str, Any]:
    return httpso(
        name,
        NAMESPACE,
        hosts=[f"{name}.scale.test"],
        scalingMetric={"requestRate": {"targetValue": 100, "window": "1m", "granularity": "1s"}},
    )


def populate(emu: KubeEmulator, targets: int) -> None:
    for index in range(targets):
        name = target_name(index)
        workload(emu, name, NAMESPACE)
        emu.create(endpoint_slice(name, []))
        emu.create(scaled(name))
    workload(emu, PROBE, NAMESPACE)
    emu.create(endpoint_slice(PROBE, ["10.0.0.1"]))
    emu.create(scaled(PROBE))


async def serve(targets: int, port: int, kubeconfig: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Room in the history for every create, zerohop's writes and the benchmark's updates.
    emulator = KubeEmulator(port=port, history_limit=10 * targets + 100_000)
    populate(emulator, targets)
    async with emulator as emu:
        emu.kubeconfig(kubeconfig, namespace=NAMESPACE)
        print(f"kubeemu serving {targets} targets on {emu.url}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_emulator")
    parser.add_argument("--targets", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.targets, args.port, args.kubeconfig))


if __name__ == "__main__":
    main()
