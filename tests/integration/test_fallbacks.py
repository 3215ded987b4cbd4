"""The add-on's answers for a cold target other than holding, through a real Envoy gateway: the fallback Service
after the hold timeout (`coldStartTimeoutFailoverRef`) and the placeholder page for browsers
(`placeholderConfig`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from extproc.app.server import ZerohopServer
from extproc.app.settings import Settings
from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy import istio
from extproc.envoy.config import FAILOVER_HEADER
from tests.helpers import free_port, wait_for
from tests.integration.stack import Stack, app, httpso, never_ready
from tests.istio_gateway import istio_gateway_bootstrap

pytestmark = pytest.mark.envoy


def failover_to(service: str, timeout: int = 1) -> str:
    return f"  coldStartTimeoutFailoverRef: {{service: {service}, port: 8080, timeoutSeconds: {timeout}}}\n"


FAILOVER_CONFIG = (
    httpso("backup", replicas="{min: 1, max: 1}")
    + app("backup")
    + httpso("never", extra=failover_to("backup"))
    + never_ready("never")
    + httpso("warmfb", replicas="{min: 1, max: 1}", extra=failover_to("backup"))
    + app("warmfb")
    + httpso("downfb", extra=failover_to("never"))
    + never_ready("downfb")
)


async def test_a_request_held_past_the_failover_timeout_is_answered_by_the_fallback(tmp_path: Path) -> None:
    async with Stack(tmp_path, FAILOVER_CONFIG) as stack:
        await stack.warm("backup")
        backup = await stack.get("backup.test")
        assert backup.status == 200, backup.body
        reply = await stack.get("never.test", "/some/path")
        assert reply.status == 200, reply.body
        assert reply.body == backup.body  # the fallback's replica answered
        assert 1.0 <= reply.elapsed < 5.0  # held for timeoutSeconds (not --hold-timeout, 20s here), then sent
        assert reply.headers.get("x-zerohop-cold-start") == "true"
        assert reply.headers.get(FAILOVER_HEADER) == "true"
        stats = stack.server.processor.stats
        assert (stats.failovers, stats.failovers_down, stats.timeouts) == (1, 0, 0)
        await wait_for(lambda: stack.state("never").traffic.outcomes == {"failover": 1}, 5, what="outcome counted")
        assert stack.server.core.cold_gate.held_total == 0


async def test_a_forged_failover_header_does_nothing(tmp_path: Path) -> None:
    async with Stack(tmp_path, FAILOVER_CONFIG) as stack:
        await stack.warm("backup")
        await stack.warm("warmfb")
        backup = await stack.get("backup.test")
        own = await stack.get("warmfb.test")
        assert own.body != backup.body
        forged = {FAILOVER_HEADER: "default/warmfb", "x-zerohop-failover-target": "default/warmfb"}
        # A warm target with a fallback: the client's header does not send it there.
        reply = await stack.get("warmfb.test", headers=forged)
        assert (reply.status, reply.body) == (200, own.body)
        # A cold one: still held for its timeout first, not sent to the fallback at once.
        forged[FAILOVER_HEADER] = "default/never"
        cold = await stack.get("never.test", headers=forged)
        assert cold.status == 200
        assert cold.elapsed >= 1.0
        assert stack.server.processor.stats.failovers == 1


async def test_a_fallback_that_is_down_too_gives_the_504(tmp_path: Path) -> None:
    async with Stack(tmp_path, FAILOVER_CONFIG) as stack:
        reply = await stack.get("downfb.test", headers={"accept": "text/html"})
        assert reply.status == 504, reply.body
        assert "did not become ready" in reply.body
        assert reply.headers.get("retry-after")
        assert reply.elapsed >= 1.0
        stats = stack.server.processor.stats
        assert (stats.failovers, stats.failovers_down, stats.timeouts) == (1, 1, 1)
        # Counted once the stream ends, which may be just after the client has its answer.
        await wait_for(lambda: stack.state("downfb").traffic.outcomes == {"timeout": 1}, 5, what="outcome counted")


PLACEHOLDER = """  placeholderConfig:
    enabled: true
    statusCode: 202
    refreshInterval: 2
    headers: {X-Extra: one, Cache-Control: public}
    content: "<h1>{{.ServiceName}} in {{ .Namespace }} wakes</h1><p>{{.RequestID}}</p>"
"""
PLACEHOLDER_CONFIG = httpso("page", replicas="{min: 0, max: 1}", extra=PLACEHOLDER) + app("page", startup_delay=1.0)


async def test_a_browser_gets_the_placeholder_at_once_while_an_api_client_is_held(tmp_path: Path) -> None:
    async with Stack(tmp_path, PLACEHOLDER_CONFIG) as stack:
        api = asyncio.create_task(stack.get("page.test", headers={"accept": "application/json"}))
        browser = await stack.get(
            "page.test",
            headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8", "x-request-id": "<script>x</script>"},
        )
        assert browser.status == 202, browser.body
        assert browser.elapsed < 0.5
        assert browser.body.startswith("<h1>page in default wakes</h1><p>&lt;script&gt;x&lt;/script&gt;</p>")
        assert "every = 2 * 1000" in browser.body  # the refresh script, at refreshInterval
        assert browser.headers["content-type"] == "text/html; charset=utf-8"
        assert browser.headers["x-keda-http-placeholder-served"] == "true"
        assert browser.headers["x-extra"] == "one"
        assert browser.headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert not api.done()
        held = await api
        assert held.status == 200, held.body
        assert held.body.startswith("hello from replica")
        assert held.headers.get("x-zerohop-cold-start") == "true"
        assert held.elapsed >= 1.0
        # Warm now: browsers get the app.
        again = await stack.get("page.test", headers={"accept": "text/html"})
        assert again.status == 200
        assert again.body.startswith("hello from replica")
        assert "x-keda-http-placeholder-served" not in again.headers
        stats = stack.server.processor.stats
        assert (stats.placeholders, stats.released) == (1, 1)


async def test_istio_shaped_gateway_sends_the_timed_out_request_to_the_fallback_cluster(tmp_path: Path) -> None:
    """The scoped EnvoyFilter with its failover route applied as istiod would (first in `managed.test:80`):
    the held request goes to `outbound|80||other.default.svc.cluster.local`, never to the target's cluster."""
    config = tmp_path / "zerohop.yaml"
    config.write_text(httpso("managed", extra=failover_to("other").replace("8080", "80")) + never_ready("managed"))
    settings = Settings(
        config=config,
        state_dir=tmp_path,
        ext_proc_address="127.0.0.1:0",
        scaler_address="127.0.0.1:0",
        admin_address="127.0.0.1:0",
        hold_timeout=5.0,
        autoscale=False,
    )
    server = ZerohopServer(settings)
    await server.start()
    try:
        targets = [state.spec for state in server.core.registry]
        failovers = istio.failover_routes(targets)
        document = istio.envoyfilter(hosts=["managed.test"], hold_timeout=settings.hold_timeout, failovers=failovers)
        listen, admin, upstream = free_port(), free_port(), free_port()
        bootstrap = istio_gateway_bootstrap(
            document,
            ["managed.test", "other.test"],
            ext_proc_port=server.ext_proc_port,
            listen_port=listen,
            admin_port=admin,
            upstream_port=upstream,
        )
        # The harness applies the HTTP_ROUTE patch as istiod does: first in `managed.test:80`.
        hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        [vhost] = [v for v in hcm["route_config"]["virtual_hosts"] if v["name"] == "managed.test:80"]
        assert vhost["routes"][0]["name"] == "zerohop-failover-default-managed"
        async with EnvoyProcess(bootstrap, admin, workdir=tmp_path / "envoy"), aiohttp.ClientSession() as session:
            forged = {"Host": "managed.test", FAILOVER_HEADER: "default/managed"}
            started = time.monotonic()
            async with session.get(f"http://127.0.0.1:{listen}/", headers=forged) as response:
                assert response.status == 200
                assert response.headers.get(FAILOVER_HEADER) == "true"
            assert time.monotonic() - started >= 1.0  # held for timeoutSeconds first, the header did nothing
            async with session.get(f"http://127.0.0.1:{admin}/stats?filter=upstream_rq_total$") as stats:
                text = await stats.text()
            sent = dict(line.rsplit(": ", 1) for line in text.splitlines() if line.startswith("cluster.outbound"))
            assert sent["cluster.outbound|80||other.default.svc.cluster.local.upstream_rq_total"] == "1"
            assert sent["cluster.outbound|80||managed.default.svc.cluster.local.upstream_rq_total"] == "0"
            assert server.processor.stats.failovers == 1
    finally:
        await server.stop()
