"""The admin HTTP server under malformed requests: a 400 and at most a rate-limited line, never a traceback
per request; a failure of its own handlers is logged with its traceback once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from extproc.observability.admin import AdminServer
from extproc.observability.pacing import Pacer

MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
    b"GET / HTTP/7.7\r\n\r\n",
]


class Status:
    def __init__(self) -> None:
        self.broken = False

    def summary(self) -> dict[str, Any]:
        return {"targetCount": 0}

    async def stream(self, pacer: Pacer) -> AsyncIterator[bytes]:
        if self.broken:
            raise RuntimeError("status is broken")
        yield b'{"targets": []}'

    async def page(self, offset: int, limit: int, query: str, pacer: Pacer) -> dict[str, Any]:
        return {"total": 0, "targets": []}


@pytest.fixture
async def admin() -> AsyncIterator[tuple[int, Status]]:
    status = Status()
    server = AdminServer(status, lambda: True)
    port = await server.start("127.0.0.1", 0)
    try:
        yield port, status
    finally:
        await server.stop()


async def send(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    answer = await reader.read(100)
    writer.close()
    return answer


async def test_malformed_requests_get_400_and_one_line_without_traceback(
    admin: tuple[int, Status], caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = admin
    with caplog.at_level(logging.DEBUG):
        for _ in range(5):
            for payload in MALFORMED:
                assert (await send(port, payload)).startswith(b"HTTP/1.0 400 Bad Request")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert len(warnings[0]) < 400


async def test_a_failing_handler_is_logged_with_its_traceback_once(
    admin: tuple[int, Status], caplog: pytest.LogCaptureFixture
) -> None:
    port, status = admin
    status.broken = True
    with caplog.at_level(logging.DEBUG):
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{port}/status") as answer:
                    assert answer.status == 500
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1
    assert logged[0].exc_info
    assert logged[0].exc_info[0] is RuntimeError
