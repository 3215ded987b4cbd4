"""Small helpers shared by the tests: free ports, waiting for a condition without fixed sleeps, and routing
a request given as plain values through a route table."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from extproc.core.registry import TargetState
from extproc.core.routing import NoUpstream, RouteTable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> None:
    """Poll `predicate` (sync or async) until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


@dataclass
class Request:
    """A request as plain values; `reads` records which parts the route table asked for."""

    authority: bytes = b""
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    cluster: str | NoUpstream | None = None
    reads: list[str] = field(default_factory=list)


class Reader:
    def cluster(self, request: Request) -> str | NoUpstream | None:
        request.reads.append("cluster")
        return request.cluster

    def authority(self, request: Request) -> bytes:
        request.reads.append("authority")
        return request.authority

    def path(self, request: Request) -> str:
        request.reads.append("path")
        return request.path

    def headers(self, request: Request) -> Mapping[str, str]:
        request.reads.append("headers")
        return request.headers


READER = Reader()


def route(
    table: RouteTable,
    authority: bytes,
    path: str = "/",
    headers: dict[str, str] | None = None,
    cluster: str | NoUpstream | None = None,
) -> TargetState | None:
    return table.lookup(Request(authority, path, headers or {}, cluster), READER)


async def steady_samples(
    load: Any, ask: Callable[[], Awaitable[float]], count: int, settle: float
) -> list[tuple[int, float]]:
    """`count` (requests the client has in flight, what `ask()` answers) pairs, each taken while the client's
    in-flight count has not changed for `settle` seconds before and during the call (so a reading that lags
    by less than `settle` sees the same number). `load` has `in_flight` and `changed_at` (monotonic)."""
    samples: list[tuple[int, float]] = []
    while len(samples) < count:
        since = load.changed_at
        remaining = since + settle - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)
            continue
        in_flight = load.in_flight
        value = await ask()
        if load.changed_at == since:
            samples.append((in_flight, value))
        else:
            await asyncio.sleep(0.01)
    return samples
