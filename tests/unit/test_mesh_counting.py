"""East-west calls and the warm path: requests that came through a client's sidecar (its filter asks for
MESH_ATTRIBUTE) are counted as the target's requests, and the warm path does not take them for the gateways'.

While a gateway's virtual host is open, the target's gateway requests are counted from the gateways' stats
minus what ext_proc counted of them; an east-west call never passes a gateway, so subtracting it too would
drop one gateway request per east-west call.
"""

from __future__ import annotations

from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2

from extproc.core.routing import NO_UPSTREAM
from extproc.core.warmpath import WarmPath
from extproc.envoy.adminapi import ClusterCounters, GatewayReading
from extproc.envoy.config import ATTRIBUTES_KEY, CLUSTER_ATTRIBUTE, MESH_ATTRIBUTE, target_cluster_name
from extproc.envoy.processor import _ExtProcReader
from extproc.envoy.warmswitch import WarmSwitch
from tests.helpers import wait_for
from tests.unit.test_metrics import shop
from tests.unit.test_processor import (
    FOLLOWED,
    WARM,
    Fixture,
    exchange,
    host,
    open_stream,
    proc,
    request_headers,
    response_headers,
)

__all__ = ["proc"]  # the fixture, used by name below

CLUSTER = "outbound|80||warm.default.svc.cluster.local"


def from_sidecar(request: ep.ProcessingRequest, cluster: str | None = CLUSTER) -> ep.ProcessingRequest:
    """`request` as a client's sidecar sends it: the sidecar filter also asks for MESH_ATTRIBUTE (the
    listener's direction; Istio's outbound listeners say OUTBOUND, 2)."""
    attributes = struct_pb2.Struct()
    attributes.update({MESH_ATTRIBUTE: 2.0, **({CLUSTER_ATTRIBUTE: cluster} if cluster else {})})
    request.attributes[ATTRIBUTES_KEY].CopyFrom(attributes)
    return request


async def test_calls_through_a_sidecar_are_counted_as_mesh_requests(proc: Fixture) -> None:
    traffic = proc.state(WARM).traffic
    traffic.mesh_apart = True  # the warm path counts the target from the gateways' stats
    await exchange(proc, from_sidecar(request_headers(host("backend:8080"))))
    await exchange(proc, request_headers(host("warm.test"), cluster=CLUSTER))
    assert (traffic.requests, traffic.mesh_requests, traffic.gateway_requests) == (2, 1, 1)


async def test_east_west_calls_are_told_apart_only_while_the_warm_path_needs_it(proc: Fixture) -> None:
    """The split costs every request an attribute lookup: none until the warm path counts the target."""
    traffic = proc.state(WARM).traffic
    await exchange(proc, from_sidecar(request_headers(host("backend:8080"))))
    assert (traffic.requests, traffic.mesh_requests) == (1, 0)


async def test_the_warm_path_tells_east_west_calls_apart_before_its_baseline() -> None:
    core = shop()
    state = next(iter(core.registry))
    gateways: Any = Gateways(target_cluster_name(state.spec))
    switch = WarmSwitch(core, WarmPath(open_after=0.0), gateways, 1.0)
    assert not state.traffic.mesh_apart
    assert await switch._baseline(state)
    assert state.traffic.mesh_apart


def test_a_sidecar_request_without_a_cluster_has_no_upstream() -> None:
    """Only the mesh attribute arrived: Envoy had no cluster to send (no route), as with the gateway filter."""
    reader = _ExtProcReader()
    request = from_sidecar(request_headers(host("x")), cluster=None)
    assert reader.cluster(request) is NO_UPSTREAM
    assert reader.from_mesh(request)
    assert not reader.from_mesh(request_headers(host("x"), cluster=CLUSTER))


class Gateways:
    """One gateway whose counter for the target's cluster the test sets."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.total = 0

    async def read(self, clusters: list[str]) -> GatewayReading:
        return GatewayReading({"gw-0": {self.cluster: ClusterCounters(requests=self.total)}})


async def test_the_warm_path_does_not_subtract_east_west_calls_from_the_gateways_count() -> None:
    core = shop()
    state = next(iter(core.registry))
    gateways = Gateways(target_cluster_name(state.spec))
    gateways_any: Any = gateways
    switch = WarmSwitch(core, WarmPath(open_after=0.0), gateways_any, 1.0)
    assert await switch._baseline(state)
    # While the host is open: 5 requests go through the gateway past zerohop, 3 east-west calls ask zerohop.
    gateways.total = 5
    state.traffic.requests += 3
    state.traffic.mesh_requests += 3
    assert await switch._scrape([state])
    assert state.traffic.requests == 8


async def test_a_followed_east_west_request_is_in_flight_as_a_mesh_request(proc: Fixture) -> None:
    traffic = proc.state(FOLLOWED).traffic
    traffic.mesh_apart = True
    call, queue = open_stream(proc)
    await queue.put(from_sidecar(request_headers(host("followed.test")), cluster="outbound|80||followed"))
    await call.read()  # continue, and send me its response headers
    assert (traffic.in_flight, traffic.mesh_in_flight, traffic.mesh_requests) == (1, 1, 1)
    await queue.put(response_headers())
    await call.read()
    await queue.put(None)
    await wait_for(lambda: traffic.in_flight == 0, 2, 0.01, what="the request's end")
    assert traffic.mesh_in_flight == 0


def test_east_west_requests_in_flight_are_added_to_the_gateways_count() -> None:
    """With the warm path open, the gateways' stats count their own requests in flight; zerohop's own count
    holds the followed gateway requests (also in the gateways') and the east-west ones (in no gateway's)."""
    traffic = next(iter(shop().registry)).traffic
    traffic.in_flight, traffic.mesh_in_flight, traffic.gateway_in_flight = 3, 2, 4
    assert traffic.snapshot(0.0, 0).in_flight == 6
