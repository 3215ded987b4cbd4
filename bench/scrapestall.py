"""How long one /metrics scrape or /status fetch holds the event loop that answers Envoy.

`python -m bench.scrapestall` serves the admin server over a synthetic registry (1k and 10k targets, each
with traffic, replicas and a finished hold, as `bench.metricsrender` builds it) and, while a ticker task
sleeps 1 ms at a time on the same loop, fetches each document from a raw socket client on that loop,
reading 64 KiB at a time (the bytes are dropped). The figure is the ticker's worst lateness during
the fetch, best and worst of REPEATS fetches (the machine is shared: a run that is descheduled shows it).
`idle` is the same ticker with no fetch, the noise floor. `whole` is how /metrics and /status were served
before they were paced: collected, written and encoded in one piece on the loop (`metrics.collect` +
`metrics.render`, `json.dumps` of the whole document), for comparison.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bench.metricsrender import registry, sources
from extproc.envoy.processor import ProcessorStats
from extproc.observability import metrics
from extproc.observability.admin import AdminServer, StatusView

REPEATS = 5
SIZES = (1_000, 10_000)
TICK = 0.001


async def _worst_lateness(work: Callable[[], Awaitable[object]]) -> float:
    """The ticker's worst lateness, in ms, while `work` runs."""
    done = False
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            worst = max(worst, time.perf_counter() - before - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        await work()
    finally:
        done = True
        await task
    return worst * 1e3


async def _fetch(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    size = 0
    while chunk := await reader.read(1 << 16):
        size += len(chunk)
    writer.close()
    return size


def _whole_app(core: Any) -> web.Application:
    """/metrics and /status the way they were served before pacing: one piece on the loop."""
    provider: Any = sources(core).provider
    view = StatusView(core, provider, ProcessorStats(), {})

    async def whole_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(metrics.collect(sources(core))).encode())

    async def whole_status(_request: web.Request) -> web.Response:
        return web.Response(body=json.dumps(view.document()).encode())

    app = web.Application()
    app.router.add_get("/metrics", whole_metrics)
    app.router.add_get("/status", whole_status)
    return app


async def _measure_size(size: int) -> dict[str, Any]:
    core = registry(size)
    source = sources(core)
    view = StatusView(core, source.provider, ProcessorStats(), {})
    paced = AdminServer(view, lambda: True, lambda pacer: metrics.scrape(source, None, pacer))
    paced_port = await paced.start("127.0.0.1", 0)
    runner = web.AppRunner(_whole_app(core))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    whole_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def idle() -> None:
        await asyncio.sleep(0.2)

    cases: dict[str, Callable[[], Awaitable[object]]] = {"idle": idle}
    for path in ("/metrics", "/status", "/status?summary=1", "/status/targets?limit=50&q=app-99"):
        cases[f"paced {path}"] = lambda path=path: _fetch(paced_port, path)
    for path in ("/metrics", "/status"):
        cases[f"whole {path}"] = lambda path=path: _fetch(whole_port, path)
    figures: dict[str, Any] = {}
    try:
        for name, work in cases.items():
            stalls = [await _worst_lateness(work) for _ in range(REPEATS)]
            figures[name] = {"best_ms": round(min(stalls), 1), "worst_ms": round(max(stalls), 1)}
        figures["bytes /metrics"] = await _fetch(paced_port, "/metrics")
        figures["bytes /status"] = await _fetch(paced_port, "/status")
        figures["bytes /status/targets page"] = await _fetch(paced_port, "/status/targets")
    finally:
        await paced.stop()
        await runner.cleanup()
    return figures


async def measure() -> dict[str, Any]:
    return {f"targets_{size}": await _measure_size(size) for size in SIZES}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure()), indent=2))
