"""Peers: several zerohop replicas answering KEDA as one.

The gateway spreads ext_proc streams over every replica while KEDA asks one of them (through the Service),
so that one must answer with the sum. Each replica serves its own counts on the peer API; `Peers`, the
scaler's CountSource, adds the other replicas' counts to its own: fetched concurrently with a short
deadline, one fetch shared by all the calls KEDA makes in the same moment, and a peer that does not answer
counted with its last known counts for at most `stale_after` seconds. A local wake (a cold request here) is
relayed to every peer at once, so the StreamIsActive stream KEDA holds on any replica pushes `true`.
Peer addresses come from a provider (Kubernetes: zerohop's own EndpointSlices).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from extproc._proto import peers_pb2 as pb
from extproc._proto import peers_pb2_grpc as pb_grpc
from extproc.core.activation import ActivationBus
from extproc.core.background import BackgroundTasks
from extproc.core.httpso import TargetKey
from extproc.core.registry import TargetRegistry, TargetState
from extproc.core.traffic import EMPTY_SNAPSHOT, TrafficSnapshot

log = logging.getLogger(__name__)

# Calls from KEDA within this long of a fetch share its result.
_SHARE_FETCH_FOR = 0.1
_ACTIVATE_DEADLINE = 1.0


class PeerServicer(pb_grpc.PeersServicer):
    """This replica's side of the peer API."""

    def __init__(self, replica: str, registry: TargetRegistry, bus: ActivationBus) -> None:
        self._replica = replica
        self._registry = registry
        self._bus = bus

    async def GetCounts(
        self, request: pb.CountsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CountsResponse:
        now = time.monotonic()
        targets = []
        for state in self._registry:
            snapshot = state.snapshot(now)
            targets.append(
                pb.TargetCounts(
                    namespace=state.key.namespace,
                    name=state.key.name,
                    in_flight=snapshot.in_flight,
                    held=snapshot.held,
                    requests=snapshot.requests,
                    rate=snapshot.rate,
                    forced_active=snapshot.forced_active,
                )
            )
        return pb.CountsResponse(replica=self._replica, targets=targets)

    async def Activate(
        self, request: pb.ActivateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ActivateResponse:
        for target in request.targets:
            self._bus.publish(TargetKey(target.namespace, target.name), local=False)
        return pb.ActivateResponse()


@dataclass
class Peer:
    address: str
    channel: grpc.aio.Channel
    stub: pb_grpc.PeersAsyncStub
    counts: dict[TargetKey, TrafficSnapshot] = field(default_factory=dict)
    answered_at: float = -1e18
    failures: int = 0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One other replica as this one sees it; `last_answer_age` is None until it has answered."""

    address: str
    last_answer_age: float | None
    failures: int
    last_error: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "lastAnswerAgeSeconds": self.last_answer_age,
            "failures": self.failures,
            "lastError": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class PeersStatus:
    """The peers at one moment: for /status and the peer metrics."""

    replica: str
    peers: tuple[PeerStatus, ...]
    answered: int
    fetch_errors: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "peers": [peer.as_dict() for peer in self.peers],
            "answered": self.answered,
            "fetchErrors": self.fetch_errors,
        }


class Peers:
    """The other replicas: their counts summed into ours (a scaler CountSource), our wakes relayed to them."""

    def __init__(
        self,
        replica: str,
        bus: ActivationBus,
        *,
        timeout: float = 0.2,
        stale_after: float = 10.0,
    ) -> None:
        self.replica = replica
        self._bus = bus
        self.timeout = timeout
        self.stale_after = stale_after
        self._peers: dict[str, Peer] = {}
        self._fetch: asyncio.Task[None] | None = None
        self._fetched_at = -1e18
        self._tasks = BackgroundTasks()
        self.answered = 0
        self.fetch_errors = 0

    def start(self) -> None:
        subscription = self._bus.subscribe(local_only=True)
        self._tasks.spawn(self._relay_wakes(subscription), name="peer activation relay")

    async def stop(self) -> None:
        await self._tasks.close()
        for peer in self._peers.values():
            await peer.channel.close()
        self._peers.clear()

    def set_peers(self, addresses: Iterable[str]) -> None:
        """The other replicas' peer addresses (HOST:PORT); channels open and close to match."""
        wanted = set(addresses)
        for address in [a for a in self._peers if a not in wanted]:
            peer = self._peers.pop(address)
            self._tasks.spawn(peer.channel.close(), name=f"peer channel close {address}", cancel_on_close=False)
        for address in sorted(wanted - set(self._peers)):
            channel = grpc.aio.insecure_channel(address)
            self._peers[address] = Peer(address, channel, pb_grpc.PeersStub(channel))
        if wanted:
            log.debug("peers: %s", ", ".join(sorted(wanted)))

    @property
    def addresses(self) -> list[str]:
        return sorted(self._peers)

    def known_totals(self, state: TargetState) -> tuple[TrafficSnapshot, int]:
        """Ours plus each peer's last known counts (no fetch; within `stale_after`), and how many peers counted."""
        total = state.snapshot()
        now = time.monotonic()
        counted = 0
        for peer in self._peers.values():
            if now - peer.answered_at <= self.stale_after:
                total = total + peer.counts.get(state.key, EMPTY_SNAPSHOT)
                counted += 1
        return total, counted

    async def totals(self, state: TargetState) -> TrafficSnapshot:
        if not self._peers:
            return state.snapshot()
        await self._fresh_counts()
        return self.known_totals(state)[0]

    async def _fresh_counts(self) -> None:
        if self._fetch is None or (self._fetch.done() and time.monotonic() - self._fetched_at > _SHARE_FETCH_FOR):
            self._fetch = asyncio.ensure_future(self._fetch_all())
        await asyncio.shield(self._fetch)

    async def _fetch_all(self) -> None:
        peers = list(self._peers.values())
        results = await asyncio.gather(*(self._fetch_one(peer) for peer in peers))
        self.answered = sum(results)
        self._fetched_at = time.monotonic()

    async def _fetch_one(self, peer: Peer) -> bool:
        try:
            response = await peer.stub.GetCounts(pb.CountsRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            peer.failures += 1
            peer.last_error = f"{exc.code().name}: {exc.details()}"
            self.fetch_errors += 1
            if peer.failures == 1:
                log.warning(
                    "peer %s did not answer (%s); using its last counts for up to %gs",
                    peer.address,
                    peer.last_error,
                    self.stale_after,
                )
            return False
        peer.counts = {
            TargetKey(t.namespace, t.name): TrafficSnapshot(t.in_flight, t.held, t.requests, t.rate, t.forced_active)
            for t in response.targets
        }
        peer.answered_at = time.monotonic()
        if peer.failures:
            log.info("peer %s answers again", peer.address)
        peer.failures = 0
        return True

    async def _relay_wakes(self, subscription: Any) -> None:
        async for keys in subscription:
            if not self._peers:
                continue
            request = pb.ActivateRequest(
                from_replica=self.replica, targets=[pb.Target(namespace=k.namespace, name=k.name) for k in keys]
            )
            results = await asyncio.gather(
                *(peer.stub.Activate(request, timeout=_ACTIVATE_DEADLINE) for peer in self._peers.values()),
                return_exceptions=True,
            )
            for peer, result in zip(list(self._peers.values()), results, strict=False):
                if isinstance(result, Exception):
                    log.debug("activation relay to %s failed: %r", peer.address, result)

    def status(self) -> PeersStatus:
        now = time.monotonic()
        peers = tuple(
            PeerStatus(
                peer.address,
                round(now - peer.answered_at, 3) if peer.answered_at > 0 else None,
                peer.failures,
                peer.last_error,
            )
            for peer in self._peers.values()
        )
        return PeersStatus(self.replica, peers, self.answered, self.fetch_errors)
