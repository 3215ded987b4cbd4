"""Latency of every setup sampled request by request in the same seconds: the paired low-rate load.

`python -m bench.paired --rate R --duration S A=127.0.0.1:P1 B=127.0.0.1:P2 ...` keeps one keep-alive
HTTP/1.1 connection to each setup's gateway and, R times a second, sends one `GET /` to every setup in turn
(a fresh random order each tick), one request at a time, so requests never overlap and a slow moment of
the machine hits every setup alike. Prints one JSON line: per setup, each request's latency in
microseconds (from the write to the last byte of the response) and the status codes seen.

wrk's fixed-rate run measures one setup at a time, so between two setups lie seconds in which a shared
2-CPU machine drifts by more than the tenths of a millisecond being compared; pairing removes that drift.
Python's own client overhead is in every sample alike and cancels out of the differences.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import time

MARKER = "PAIRED_RESULT "
_MAX_HEAD = 16_384


class Connection:
    """One keep-alive HTTP/1.1 connection sending `GET /` and reading whole responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: zerohop-bench\r\n\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def get(self) -> tuple[int, int]:
        """Send one request; (status, microseconds until the response's last byte)."""
        if self.writer is None or self.reader is None:
            await self.open()
        assert self.writer is not None
        assert self.reader is not None
        started = time.perf_counter_ns()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await self.reader.readexactly(length)
        elapsed = (time.perf_counter_ns() - started) // 1000
        if close:
            await self.close()
        return status, elapsed

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def run(targets: dict[str, tuple[str, int]], rate: float, duration: float, seed: int) -> dict[str, object]:
    connections = {key: Connection(host, port) for key, (host, port) in targets.items()}
    for connection in connections.values():
        await connection.open()
    latencies: dict[str, list[int]] = {key: [] for key in targets}
    statuses: dict[str, dict[str, int]] = {key: {} for key in targets}
    errors: dict[str, int] = dict.fromkeys(targets, 0)
    order = list(targets)
    shuffle = random.Random(seed).shuffle
    interval = 1.0 / rate
    loop = asyncio.get_running_loop()
    started = loop.time()
    ticks = int(duration * rate)
    for tick in range(ticks):
        shuffle(order)
        for key in order:
            try:
                status, elapsed = await asyncio.wait_for(connections[key].get(), 10.0)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
                errors[key] += 1
                await connections[key].close()
                continue
            latencies[key].append(elapsed)
            statuses[key][str(status)] = statuses[key].get(str(status), 0) + 1
        delay = started + (tick + 1) * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    seconds = loop.time() - started
    for connection in connections.values():
        await connection.close()
    return {
        "seconds": round(seconds, 3),
        "ticks": ticks,
        "latencies_us": latencies,
        "statuses": statuses,
        "errors": errors,
    }


def _target(text: str) -> tuple[str, tuple[str, int]]:
    key, _, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not key or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected KEY=HOST:PORT, got {text!r}")
    return key, (host, int(port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, required=True, help="ticks per second (one request per setup each)")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-tick order")
    parser.add_argument("targets", nargs="+", type=_target, metavar="KEY=HOST:PORT")
    args = parser.parse_args(argv)
    import uvloop

    result = uvloop.run(run(dict(args.targets), args.rate, args.duration, args.seed))
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
