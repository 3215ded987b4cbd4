"""The shipped stats inclusion on a real Envoy configured as Istio configures a gateway pod: through the pod's
`:15090/stats/prometheus` listener, every outbound cluster shows membership_healthy (0 until istiod pushes a
ready endpoint, then 1), upstream_rq_total and upstream_rq_active, and no other cluster stats; without the
inclusion only Istio's defaults appear; the admin stays on localhost.

`filter=` is an RE2 search over Envoy's full stat name (`cluster.outbound|...|HOST.membership_healthy`), not
over the Prometheus name or the tag-extracted name; `test_filter_matches_the_full_stat_name` shows it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from extproc.envoy import istio
from extproc.envoy.config import istio_cluster_name
from tests.helpers import free_port, wait_for
from tests.istio_gateway import SHIPPED_GATEWAY_STATS, GatewayPod, gateway_pod

pytestmark = pytest.mark.envoy

HOST = "app.example.com"
ROUTES = {HOST: ("app", "default", 8080)}
APP = istio_cluster_name("app", "default", 8080)
EXT_PROC = istio_cluster_name(istio.SERVICE_NAME, "zerohop-system", istio.EXT_PROC_PORT)
NARROW = {
    "envoy_cluster_membership_healthy",
    "envoy_cluster_upstream_rq_total",
    "envoy_cluster_upstream_rq_active",
    "envoy_cluster_upstream_cx_none_healthy",
}

_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

Sample = tuple[str, dict[str, str], float]


def parse(text: str) -> list[Sample]:
    """(family, labels, value) of each sample line (histogram series included)."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            family, labels, value = match.groups()
            samples.append((family, dict(_LABEL.findall(labels)), float(value)))
    return samples


def full_name(cluster: str, stat: str) -> str:
    """The filter for one stat of one cluster, anchored on Envoy's full stat name."""
    return "^" + re.escape(f"cluster.{cluster}.{stat}") + "$"


async def stats(session: aiohttp.ClientSession, pod: GatewayPod, stat_filter: str | None = None) -> list[Sample]:
    async with session.get(pod.stats_url(stat_filter)) as response:
        assert response.status == 200
        return parse(await response.text())


async def value(session: aiohttp.ClientSession, pod: GatewayPod, cluster: str, stat: str) -> float | None:
    found = await stats(session, pod, full_name(cluster, stat))
    assert all(labels == {"cluster_name": cluster} for _, labels, _ in found), found
    return found[0][2] if found else None


async def becomes(session: aiohttp.ClientSession, pod: GatewayPod, cluster: str, stat: str, wanted: float) -> None:
    async def reached() -> bool:
        return await value(session, pod, cluster, stat) == wanted

    await wait_for(reached, timeout=3.0, what=f"{stat} of {cluster} on {pod.pod_ip} to be {wanted}")


async def through_gateway(session: aiohttp.ClientSession, pod: GatewayPod, path: str) -> int:
    async with session.get(pod.gateway_url + path, headers={"Host": HOST}) as response:
        await response.read()
        return response.status


@asynccontextmanager
async def app_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """The target's one replica on 127.0.0.1; `/hold` answers only once the event is set."""
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/hold":
            await release.wait()
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, release
    finally:
        release.set()
        await runner.cleanup()


def pod(
    tmp_path: Path,
    pod_ip: str = "127.0.0.2",
    stats_port: int | None = None,
    *,
    stats_inclusion: bool = True,
    manifest: Path = SHIPPED_GATEWAY_STATS,
) -> AbstractAsyncContextManager[GatewayPod]:
    return gateway_pod(
        istio.envoyfilter(),
        ROUTES,
        pod_ip=pod_ip,
        workdir=tmp_path / pod_ip,
        ext_proc_port=free_port(),  # no zerohop here: the filter fails open
        stats_port=stats_port or free_port(),
        stats_inclusion=stats_inclusion,
        manifest=manifest,
    )


async def test_membership_healthy_is_0_until_the_endpoint_is_pushed_then_1(tmp_path: Path) -> None:
    async with pod(tmp_path) as gateway, aiohttp.ClientSession() as session, app_server() as (port, _):
        assert await value(session, gateway, APP, "membership_healthy") == 0
        gateway.push(APP, [("127.0.0.1", port)])
        await becomes(session, gateway, APP, "membership_healthy", 1)
        [(family, labels, healthy)] = await stats(session, gateway, full_name(APP, "membership_healthy"))
        assert (family, labels, healthy) == ("envoy_cluster_membership_healthy", {"cluster_name": APP}, 1)
        gateway.push(APP, [])  # scaled back to zero
        await becomes(session, gateway, APP, "membership_healthy", 0)


async def test_upstream_rq_total_counts_and_upstream_rq_active_follows_requests_in_flight(tmp_path: Path) -> None:
    async with pod(tmp_path) as gateway, aiohttp.ClientSession() as session, app_server() as (port, release):
        gateway.push(APP, [("127.0.0.1", port)])
        await becomes(session, gateway, APP, "membership_healthy", 1)
        assert await value(session, gateway, APP, "upstream_rq_total") == 0
        for _ in range(3):
            assert await through_gateway(session, gateway, "/") == 200
        await becomes(session, gateway, APP, "upstream_rq_total", 3)
        held = asyncio.create_task(through_gateway(session, gateway, "/hold"))
        await becomes(session, gateway, APP, "upstream_rq_active", 1)
        release.set()
        assert await held == 200
        await becomes(session, gateway, APP, "upstream_rq_active", 0)
        assert await value(session, gateway, APP, "upstream_rq_total") == 4


async def test_the_inclusion_adds_four_stats_per_outbound_cluster_and_nothing_else(tmp_path: Path) -> None:
    async with pod(tmp_path) as gateway, aiohttp.ClientSession() as session:
        samples = await stats(session, gateway)
    by_cluster: dict[str, set[str]] = {}
    for family, labels, _ in samples:
        if "cluster_name" in labels:
            by_cluster.setdefault(labels["cluster_name"], set()).add(family)
    assert set(by_cluster) == {APP, EXT_PROC, "xds-grpc"}  # not prometheus_stats, the stats listener's own
    assert by_cluster[APP] == by_cluster[EXT_PROC] == NARROW
    assert len(by_cluster["xds-grpc"]) > len(NARROW)  # Istio includes all of cluster.xds-grpc by default
    assert not [f for f, labels, _ in samples if f.startswith(("envoy_http_", "envoy_listener_")) and labels]


async def test_without_the_inclusion_only_istios_default_stats_appear(tmp_path: Path) -> None:
    async with pod(tmp_path, stats_inclusion=False) as gateway, aiohttp.ClientSession() as session:
        samples = await stats(session, gateway)
        assert await value(session, gateway, APP, "membership_healthy") is None
    clusters = {labels["cluster_name"] for _, labels, _ in samples if "cluster_name" in labels}
    assert clusters == {"xds-grpc"}
    families = {family for family, _, _ in samples}
    assert "envoy_cluster_membership_healthy" in families  # xds-grpc's: the listener and matcher work
    assert all(f.startswith(("envoy_cluster_", "envoy_server_", "envoy_listener_manager_")) for f in families)


async def test_filter_matches_the_full_stat_name(tmp_path: Path) -> None:
    async with pod(tmp_path) as gateway, aiohttp.ClientSession() as session:
        outbound = await stats(session, gateway, r"^cluster\.outbound\|.*\.membership_healthy$")
        assert {labels["cluster_name"] for _, labels, _ in outbound} == {APP, EXT_PROC}
        # Not the Prometheus name, not the tag-extracted name (`cluster.membership_healthy`), not a label.
        for other in ("envoy_cluster_membership_healthy", r"^cluster\.membership_healthy$", "cluster_name"):
            assert await stats(session, gateway, other) == [], other
        # A search, not a full match: a fragment of the name is enough.
        assert len(await stats(session, gateway, "app.default.svc")) == len(NARROW)


async def test_a_stats_pattern_must_match_the_whole_name(tmp_path: Path) -> None:
    """Envoy full-matches `safe_regex` patterns: a regexp naming only the stat's last part includes nothing,
    which is why the shipped ones spell out `cluster.outbound|...`. The same path makes a wrong manifest fail."""
    manifest = tmp_path / "partial.yaml"
    shipped = SHIPPED_GATEWAY_STATS.read_text()
    manifest.write_text(
        shipped.replace(r"cluster\.outbound\|[0-9]+\|[^|]*\|[^|]+\.membership_healthy", "membership_healthy")
    )
    assert manifest.read_text() != shipped
    async with pod(tmp_path, manifest=manifest) as gateway, aiohttp.ClientSession() as session:
        assert await value(session, gateway, APP, "membership_healthy") is None
        assert await value(session, gateway, APP, "upstream_rq_total") == 0


async def test_the_admin_is_not_reachable_on_the_pod_ip_and_the_stats_port_serves_only_stats(tmp_path: Path) -> None:
    async with pod(tmp_path) as gateway, aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{gateway.admin_port}/ready") as response:
            assert response.status == 200  # the admin, on localhost
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"http://{gateway.pod_ip}:{gateway.admin_port}/ready")
        for path in ("/config_dump", "/clusters", "/quitquitquit"):
            async with session.get(f"http://{gateway.pod_ip}:{gateway.stats_port}{path}") as response:
                assert response.status == 404, path


async def test_two_pods_share_the_stats_port_and_learn_endpoints_on_their_own(tmp_path: Path) -> None:
    stats_port = free_port()
    async with (
        pod(tmp_path, "127.0.0.2", stats_port) as first,
        pod(tmp_path, "127.0.0.3", stats_port) as second,
        aiohttp.ClientSession() as session,
        app_server() as (port, _),
    ):
        assert first.stats_port == second.stats_port
        first.push(APP, [("127.0.0.1", port)])  # istiod reaches one pod first
        await becomes(session, first, APP, "membership_healthy", 1)
        assert await value(session, second, APP, "membership_healthy") == 0
        second.push(APP, [("127.0.0.1", port)])
        await becomes(session, second, APP, "membership_healthy", 1)
