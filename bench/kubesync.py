"""How long the leader takes to write everything for N targets, and what a restarted leader writes.

`python -m bench.kubesync --targets 1000` seeds the API emulator of the tests (`tests.kubeemu`, in the bench
process) with N targets (HTTPScaledObject, Service, Deployment at 0), starts a real `zerohop serve --provider
kubernetes` process on it (leader election on, ScaledObject management on) and times, from the process start:
- `ready`: `/readyz` answers 200;
- `scaledobjects`: every ScaledObject exists;
- `statuses`: every HTTPScaledObject has zerohop's `Ready` condition;
and counts the write requests the emulator saw (POST/PUT/PATCH, Lease renewals left out) and how many were
answered 429. Then it stops zerohop, starts it again on the same objects, and counts the writes of the
restarted leader over `--settle` seconds after it is ready: everything is already written, so it should be 0.
Extra arguments after `--` go to `zerohop serve` (e.g. `-- --kube-api-qps 200 --kube-api-burst 400`).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import Child
from tests.kube.harness import httpso
from tests.kubeemu import KubeEmulator
from tests.kubeemu.history import StoreEvent
from tests.kubeemu.manifests import deployment, service

_WRITES = ("POST", "PUT", "PATCH")


def _seed(emu: KubeEmulator, count: int) -> None:
    for i in range(count):
        name = f"t{i:05d}"
        emu.create(deployment(name, "default", replicas=0))
        emu.create(service(name, "default", ports=[{"name": "http", "port": 8080, "targetPort": 18080}]))
        emu.create(httpso(name))


def _has_ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" for c in conditions if isinstance(c, dict))


class Progress:
    """Follows the store: which ScaledObjects exist and which HTTPScaledObjects have a Ready condition."""

    def __init__(self, emu: KubeEmulator, count: int) -> None:
        self.count = count
        self.scaledobjects: set[tuple[str, str]] = set()
        self.statuses: set[tuple[str, str]] = set()
        self.times: dict[str, float] = {}
        self.start = time.monotonic()
        self.done = asyncio.Event()
        self._unsubscribe = emu.store.subscribe(self._event)

    def _event(self, event: StoreEvent) -> None:
        if event.type == "DELETED":
            return
        if event.gr.resource == "scaledobjects":
            self.scaledobjects.add(event.key)
            if len(self.scaledobjects) == self.count:
                self.times.setdefault("scaledobjects", time.monotonic() - self.start)
        elif event.gr.resource == "httpscaledobjects" and _has_ready(event.obj):
            self.statuses.add(event.key)
            if len(self.statuses) == self.count:
                self.times.setdefault("statuses", time.monotonic() - self.start)
        if len(self.times) == 2:
            self.done.set()

    def close(self) -> None:
        self._unsubscribe()


def _what(path: str) -> str:
    if path.endswith("/status"):
        return "status"
    return next((p for p in ("scaledobjects", "envoyfilters") if f"/{p}" in path), path)


def _writes(emu: KubeEmulator) -> dict[str, int]:
    records = [r for r in emu.requests if r.method in _WRITES and "/leases/" not in r.path]
    return {
        "writes": len(records),
        "throttled_429": sum(1 for r in records if r.status == 429),
        "scaledobject_writes": sum(1 for r in records if "/scaledobjects" in r.path),
        "status_writes": sum(1 for r in records if r.path.endswith("/status")),
        "by_method_status": dict(collections.Counter(f"{r.method} {r.status} {_what(r.path)}" for r in records)),
    }


def _free_block() -> int:
    """A port whose next three are free too (admin, ext_proc, scaler, peers)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + 3 < 65536 and all(_free(base + i) for i in range(1, 4)):
            return base
    raise RuntimeError("no block of 4 free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _argv(kubeconfig: Path, admin_port: int, extra: Sequence[str]) -> list[str]:
    # The same ports for both runs: the scaler's port is part of every ScaledObject.
    return [
        "-m", "extproc", "serve",
        "--provider", "kubernetes",
        "--kubeconfig", str(kubeconfig),
        "--pod-name", "zerohop-0",
        "--ext-proc-address", f"127.0.0.1:{admin_port + 1}",
        "--scaler-address", f"127.0.0.1:{admin_port + 2}",
        "--admin-address", f"127.0.0.1:{admin_port}",
        "--peer-address", f"127.0.0.1:{admin_port + 3}",
        "--gateway-stats-port", "0",
        "--log-level", "warning",
        *extra,
    ]  # fmt: skip


async def run(count: int, timeout: float, settle: float, extra: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"targets": count, "zerohop_args": list(extra)}
    with tempfile.TemporaryDirectory(prefix="kubesync-") as tmp:
        workdir = Path(tmp)
        async with KubeEmulator() as emu:
            _seed(emu, count)
            kubeconfig = emu.kubeconfig(workdir / "kubeconfig")
            admin_port = _free_block()
            emu.clear_requests()
            progress = Progress(emu, count)
            zerohop = Child("zerohop", _argv(kubeconfig, admin_port, extra), workdir / "zerohop.log")
            try:
                await zerohop.start()
                await zerohop.wait_http_ok(f"http://127.0.0.1:{admin_port}/readyz", timeout=120)
                result["ready_s"] = round(time.monotonic() - progress.start, 2)
                try:
                    await asyncio.wait_for(progress.done.wait(), timeout)
                except TimeoutError:
                    result["timed_out_after_s"] = timeout
                result["first_leader"] = {
                    **{f"{k}_s": round(v, 2) for k, v in progress.times.items()},
                    "scaledobjects": len(progress.scaledobjects),
                    "statuses": len(progress.statuses),
                    **_writes(emu),
                }
            finally:
                progress.close()
                await zerohop.stop()
                result["log_tail"] = zerohop.log_tail(5)
            emu.clear_requests()
            again = Child("zerohop", _argv(kubeconfig, admin_port, extra), workdir / "zerohop-again.log")
            try:
                started = time.monotonic()
                await again.start()
                await again.wait_http_ok(f"http://127.0.0.1:{admin_port}/readyz", timeout=120)
                ready = time.monotonic() - started
                await asyncio.sleep(settle)
                result["restarted_leader"] = {"ready_s": round(ready, 2), "settle_s": settle, **_writes(emu)}
            finally:
                await again.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kubesync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting for the sync after this")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to count the restarted leader's writes")
    parser.add_argument("zerohop_args", nargs="*", help="after --: extra `zerohop serve` arguments")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(run(args.targets, args.timeout, args.settle, args.zerohop_args)), indent=2))


if __name__ == "__main__":
    main()
