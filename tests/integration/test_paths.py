"""Every way a request goes through the real Envoy gateway with zerohop: warm, cold, unknown host, hold
timeout, over the cap, client gone while held."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from tests.helpers import wait_for
from tests.integration.stack import Stack, app, httpso, never_ready

pytestmark = pytest.mark.envoy

CONFIG = (
    httpso("warm", replicas="{min: 1, max: 1}")
    + app("warm")
    + httpso("cold", replicas="{min: 0, max: 1}")
    + app("cold", startup_delay=0.3)
    + httpso("never", extra="  timeouts: {conditionWait: 1s}\n")
    + never_ready("never")
    + httpso("sleepy")
    + never_ready("sleepy")
)


async def test_warm_request_continues_at_once_and_is_counted(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        await stack.warm("warm")
        before = stack.server.processor.stats.streams
        reply = await stack.get("warm.test", "/hello")
        assert reply.status == 200
        assert reply.body.startswith("hello from replica")
        assert "x-zerohop-cold-start" not in reply.headers
        assert stack.state("warm").traffic.requests == 1
        assert stack.server.processor.stats.streams == before + 1
        assert stack.server.processor.stats.cold_requests == 0


async def test_cold_request_is_held_until_ready_then_200_with_cold_header(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        assert not stack.state("cold").gate.routable
        reply = await stack.get("cold.test")
        assert reply.status == 200, reply.body
        assert reply.headers.get("x-zerohop-cold-start") == "true"
        assert reply.elapsed >= 0.3  # the app's boot time, spent held
        stats = stack.server.processor.stats
        assert (stats.cold_requests, stats.released, stats.released_5xx) == (1, 1, 0)
        assert stack.server.core.cold_gate.held_total == 0
        again = await stack.get("cold.test")
        assert again.status == 200
        assert "x-zerohop-cold-start" not in again.headers


async def test_a_host_with_a_trailing_dot_is_routed_counted_and_held_like_the_host(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        await stack.warm("warm")
        warm = await stack.get("warm.test.", "/hello")
        assert warm.status == 200, warm.body
        assert warm.body.startswith("hello from replica")
        assert stack.state("warm").traffic.requests == 1
        assert not stack.state("cold").gate.routable
        cold = await stack.get("cold.test.:80")
        assert cold.status == 200, cold.body
        assert cold.headers.get("x-zerohop-cold-start") == "true"
        stats = stack.server.processor.stats
        assert (stats.cold_requests, stats.released, stats.unmatched) == (1, 1, 0)
        assert stack.state("cold").traffic.requests == 1


async def test_unknown_host_passes_through_unheld_and_only_counts_as_unmatched(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        reply = await stack.get("nobody.example")
        # zerohop said CONTINUE; the gateway's own default route answered.
        assert reply.status == 404
        assert "no route for this host" in reply.body
        assert reply.elapsed < 1.0
        assert stack.server.processor.stats.unmatched == 1
        assert all(state.traffic.requests == 0 for state in stack.server.core.registry)


async def test_hold_timeout_is_504_with_retry_after_shaped_for_the_client(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG, retry_after=7) as stack:
        plain, page = await asyncio.gather(
            stack.get("never.test"), stack.get("never.test", headers={"Accept": "text/html"})
        )
        for reply in (plain, page):
            assert reply.status == 504
            assert reply.headers["retry-after"] == "7"
            assert 1.0 <= reply.elapsed < 3.0
        assert "did not become ready within 1s" in plain.body
        assert page.headers["content-type"].startswith("text/html")
        assert "<meta http-equiv" in page.body
        assert stack.server.processor.stats.timeouts == 2
        assert stack.server.core.cold_gate.held_total == 0
        await wait_for(lambda: stack.state("never").traffic.in_flight == 0, 5, what="in-flight back to 0")


async def test_grpc_client_gets_unavailable_with_retry_after(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        options = [("grpc.default_authority", "never.test")]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.listen_port}", options=options) as channel:
            call = channel.unary_unary("/demo.Greeter/Hello")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(b"", timeout=10)
        error = raised.value
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "did not become ready" in (error.details() or "")
        trailing = dict(error.trailing_metadata() or ())
        assert trailing.get("retry-after") == "5"


async def test_over_the_per_target_cap_is_503_at_once(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG, max_held_per_target=3) as stack:
        held = [asyncio.create_task(stack.get("never.test")) for _ in range(3)]
        await wait_for(lambda: stack.server.core.cold_gate.held_total == 3, 5, what="3 held")
        extra = await asyncio.gather(*(stack.get("never.test") for _ in range(3)))
        assert [r.status for r in extra] == [503, 503, 503]
        assert all(r.elapsed < 0.5 and r.headers["retry-after"] == "5" for r in extra)
        assert "too many requests are waiting" in extra[0].body
        assert [r.status for r in await asyncio.gather(*held)] == [504, 504, 504]
        assert stack.server.processor.stats.over_capacity == 3
        await wait_for(lambda: stack.state("never").traffic.in_flight == 0, 5, what="in-flight back to 0")


async def test_client_gone_while_held_releases_counts(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG, hold_timeout=20.0) as stack:
        aborted = [asyncio.create_task(stack.get("sleepy.test", timeout=1.0)) for _ in range(5)]
        await wait_for(lambda: stack.server.core.cold_gate.held_total == 5, 5, what="5 held")
        results = await asyncio.gather(*aborted, return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in results), results
        await wait_for(lambda: stack.server.core.cold_gate.held_total == 0, 5, what="holds released after abort")
        await wait_for(lambda: stack.state("sleepy").traffic.in_flight == 0, 5, what="in-flight released")
        assert stack.server.processor.stats.timeouts == 0


SCALER_LOG = "extproc.keda.scaler"


async def test_warm_requests_log_nothing_even_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        await stack.warm("warm")
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="extproc"):
            for _ in range(20):
                assert (await stack.get("warm.test")).status == 200
        # KEDA's stand-in may open its StreamIsActive streams meanwhile (the scaler logs that): not the requests'.
        logged = [r.getMessage() for r in caplog.records if r.name.startswith("extproc") and r.name != SCALER_LOG]
        assert logged == []
        with caplog.at_level(logging.INFO, logger="extproc"):
            assert (await stack.get("cold.test")).status == 200
        messages = [r.getMessage() for r in caplog.records if r.name.startswith("extproc")]
        assert any(m.startswith("cold start of default/cold") for m in messages), messages


async def test_a_path_prefix_routes_whole_segments_only(tmp_path: Path) -> None:
    config = httpso("api", replicas="{min: 1, max: 1}", extra="  pathPrefixes: [/api/]\n") + app("api")
    async with Stack(tmp_path, config) as stack:
        await stack.warm("api")
        for path in ("/api", "/api/", "/api/v1/x", "/api?q=1"):
            assert (await stack.get("api.test", path)).status == 200, path
        assert stack.state("api").traffic.requests == 4
        # Not the target's: the gateway has no route for it and zerohop neither holds nor counts it.
        reply = await stack.get("api.test", "/apix")
        assert reply.status == 404
        assert "hello from replica" not in reply.body
        assert stack.state("api").traffic.requests == 4
        assert stack.server.processor.stats.unmatched == 1
