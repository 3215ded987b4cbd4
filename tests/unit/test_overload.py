"""Under overload the ext_proc server answers at once: streams beyond --ext-proc-max-streams get
RESOURCE_EXHAUSTED (Envoy then lets the request go on uncounted), never a silent wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from extproc.app.server import ZerohopServer, grpc_options
from extproc.app.settings import Settings, SettingsError
from tests.helpers import wait_for
from tests.unit.test_server_ports import IdleProvider, settings


async def _silent(stop: asyncio.Event) -> AsyncIterator[ep.ProcessingRequest]:
    """A stream that opens and sends nothing until told: it holds one of the server's slots."""
    await stop.wait()
    return
    yield


async def test_streams_beyond_the_limit_are_refused_at_once_not_queued() -> None:
    async with ZerohopServer(settings(ext_proc_max_streams=3, max_held_total=2), provider=IdleProvider()) as server:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.ext_proc_port}")
        stub = ep_grpc.ExternalProcessorStub(channel)
        stop = asyncio.Event()
        open_calls = [stub.Process(_silent(stop)) for _ in range(3)]
        readers = [asyncio.ensure_future(call.read()) for call in open_calls]
        await wait_for(lambda: server.processor.stats.streams == 3, what="three streams open")

        started = time.monotonic()
        excess = stub.Process(_silent(stop), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await excess.read()
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 2.0, "refused, but not at once"
        assert server.processor.stats.streams == 3

        # A slot freed is a slot served again (grpc.aio may refuse one more call before it notices).
        stop.set()
        await asyncio.gather(*readers, return_exceptions=True)

        async def served() -> bool:
            headers = ep.ProcessingRequest(request_headers=ep.HttpHeaders())

            async def one() -> AsyncIterator[ep.ProcessingRequest]:
                yield headers

            try:
                await stub.Process(one(), timeout=5).read()
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return False
            return True

        await wait_for(served, what="a new stream served once the others ended")
        await channel.close()


def test_the_stream_limit_must_leave_room_for_every_held_request() -> None:
    with pytest.raises(SettingsError, match="--ext-proc-max-streams 100 must be above --max-held-total 100"):
        Settings(ext_proc_max_streams=100, max_held_total=100)
    Settings(ext_proc_max_streams=101, max_held_total=100)


def test_keepalive_pings_idle_gateway_connections() -> None:
    options: dict[str, Any] = dict(grpc_options(Settings(grpc_keepalive=30.0)))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 20_000
