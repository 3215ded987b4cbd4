"""Mirroring and fault injection alongside zerohop, in the east-west world of test_sidecar.py (a real Envoy
shaped as Istio's sidecar, zerohop's sidecar EnvoyFilter applied as istiod would, the Kubernetes emulator).

The route features are written as istiod writes them for a VirtualService's `mirror` / `mirrorPercentage`
(the route's `request_mirror_policies`) and `fault.abort` (the route's `typed_per_filter_config` for
`envoy.filters.http.fault`, whose filter Istio puts before cors, stats and the router).

What zerohop does, and docs/istio.md says:
- a mirror target is never woken or counted by shadow copies: the router sends them itself, after every
  HTTP filter has run, so zerohop's filter sees the primary request only (and its cluster);
- a request the fault filter aborts never reaches zerohop: it is not counted and wakes nothing, because
  zerohop's EnvoyFilter inserts it right before the router, after the fault filter.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from extproc.core.httpso import parse
from extproc.envoy import istio
from tests.helpers import wait_for
from tests.istio_sidecar import FAULT_FILTER, MeshService, outbound_route_configuration, static_cluster
from tests.kube.harness import httpso
from tests.kube.test_sidecar import BACKEND, FRONTEND, OTHER, east_west, plain_pod
from tests.kubeemu import KubeEmulator

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = [pytest.mark.kube, pytest.mark.envoy]

SHADOW = MeshService("shadow", "default", 8080, "10.96.0.12")  # the mirror target, managed by zerohop too
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def envoyfilter(*names: str) -> dict[str, Any]:
    """The scoped sidecar filter for the targets `names` (each `default/NAME`, Service NAME port 8080)."""
    virtual_hosts, _ = istio.sidecar_virtual_hosts([parse(httpso(name)) for name in names])
    return istio.sidecar_envoyfilter(FRONTEND, virtual_hosts=virtual_hosts)


def backend_route(route_config: dict[str, Any]) -> dict[str, Any]:
    [vhost] = [v for v in route_config["virtual_hosts"] if v["name"] == BACKEND.virtual_host]
    route: dict[str, Any] = vhost["routes"][0]
    return route


def mirrored_routes() -> dict[str, Any]:
    """Route configuration 8080 for a VirtualService on `backend` with `mirror: {host: shadow}` (100%)."""
    routes = outbound_route_configuration([BACKEND, OTHER, SHADOW], 8080)
    backend_route(routes)["route"]["request_mirror_policies"] = [
        {
            "cluster": SHADOW.cluster,
            "runtime_fraction": {"default_value": {"numerator": 1000000, "denominator": "MILLION"}},
            "trace_sampled": False,
        }
    ]
    return routes


def faulty_routes(percent: int, delay: float | None = None) -> dict[str, Any]:
    """Route configuration 8080 for a VirtualService on `backend` with `fault.abort` (HTTP 418, `percent`),
    or with `delay` instead: `fault.delay` (`fixedDelay`, 100%)."""
    routes = outbound_route_configuration([BACKEND, OTHER], 8080)
    fraction = {"numerator": percent * 10000, "denominator": "MILLION"}
    fault: dict[str, Any] = {"@type": FAULT_TYPE}
    if delay is None:
        fault["abort"] = {"http_status": 418, "percentage": fraction}
    else:
        fault["delay"] = {"fixed_delay": f"{delay}s", "percentage": fraction}
    backend_route(routes)["typed_per_filter_config"] = {FAULT_FILTER: fault}
    return routes


async def test_shadow_copies_do_not_wake_a_mirror_target_at_zero(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    async with east_west(
        tmp_path,
        kube_emulator,
        envoyfilter("backend", "shadow"),
        route_config=mirrored_routes(),
        services=[BACKEND, OTHER, SHADOW],
        at_zero=[SHADOW],
    ) as world:
        results = await asyncio.gather(*(world.sidecar.call(BACKEND) for _ in range(10)))
        assert [status for status, _, _ in results] == [200] * 10
        # Every call was copied to the shadow, which found no endpoint: the mirror did run.
        assert await world.sidecar.stat(f"cluster.{SHADOW.cluster}.upstream_cx_none_healthy") == 10
        assert world.requests("backend") == 10
        assert world.streams == 10  # one ext_proc stream per primary request, none for a shadow copy
        assert world.requests("shadow") == 0
        assert world.replicas("shadow") == 0
        assert world.server.provider.scale_patches == 1  # type: ignore[attr-defined]  # the backend's only


async def test_a_shadow_copy_goes_out_with_the_shadow_host_and_past_zerohop(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    """What a shadow looks like: Envoy appends `-shadow` to the host and sends it from the router, so no
    HTTP filter, zerohop's included, sees it (the shadow's pod here stands outside the emulator's view)."""
    seen: list[str] = []
    async with (
        plain_pod(seen=seen) as shadow_port,
        east_west(
            tmp_path,
            kube_emulator,
            envoyfilter("backend"),
            route_config=mirrored_routes(),
            services=[BACKEND, OTHER, SHADOW],
            clusters=[static_cluster(SHADOW.cluster, [("127.0.0.1", shadow_port)])],
        ) as world,
    ):
        for _ in range(3):
            status, _, _ = await world.sidecar.call(BACKEND, host="backend:8080")
            assert status == 200
        # Shadows are fire-and-forget: the last may arrive just after its primary's answer.
        await wait_for(lambda: len(seen) >= 3, 5, 0.01, what="three shadow copies")
        assert seen == ["backend-shadow:8080"] * 3
        assert world.streams == 3


async def test_requests_the_fault_filter_aborts_are_not_counted(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    async with east_west(tmp_path, kube_emulator, envoyfilter("backend"), route_config=faulty_routes(50)) as world:
        results = await asyncio.gather(*(world.sidecar.call(BACKEND) for _ in range(40)))
        statuses = Counter(status for status, _, _ in results)
        assert set(statuses) == {200, 418}, statuses  # both outcomes (each 1 in 2**40 to be missing)
        assert world.requests() == statuses[200]
        assert world.streams == statuses[200]


async def test_a_fully_aborted_backend_at_zero_stays_at_zero(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    async with east_west(tmp_path, kube_emulator, envoyfilter("backend"), route_config=faulty_routes(100)) as world:
        results = await asyncio.gather(*(world.sidecar.call(BACKEND) for _ in range(5)))
        assert [status for status, _, _ in results] == [418] * 5
        assert world.streams == 0
        assert world.replicas() == 0


async def test_control_zerohop_before_the_fault_filter_would_count_aborted_requests(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    """Why the filter's position is set: inserted before the fault filter instead, zerohop counts (and would
    wake the target for) requests that the fault filter then aborts."""
    document = envoyfilter("backend")
    [filter_patch] = [p for p in document["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    filter_patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] = FAULT_FILTER
    async with east_west(tmp_path, kube_emulator, document, route_config=faulty_routes(50)) as world:
        results = await asyncio.gather(*(world.sidecar.call(BACKEND) for _ in range(40)))
        statuses = Counter(status for status, _, _ in results)
        assert statuses[418] > 0, statuses
        assert world.requests() == 40


async def test_delayed_requests_are_counted_after_their_delay(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    routes = faulty_routes(100, delay=0.3)
    async with east_west(tmp_path, kube_emulator, envoyfilter("backend"), route_config=routes) as world:
        loop = asyncio.get_running_loop()
        call = asyncio.ensure_future(world.sidecar.call(BACKEND))
        started = loop.time()
        await wait_for(lambda: world.streams == 1, 5, 0.01, what="the delayed call at zerohop")
        assert loop.time() - started >= 0.3
        status, _, _ = await call
        assert status == 200
        assert world.requests() == 1
