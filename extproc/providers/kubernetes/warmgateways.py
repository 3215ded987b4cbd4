"""The Kubernetes provider's side of the warm path (Istio gateways): a switch is a rewrite of the scoped
EnvoyFilter, confirmed by probing each Ready gateway pod for each switched host until the pod's own answer
says it runs the new state; counts come from each pod's stats (`POD_IP:15090/stats/prometheus`).

The loop and the counting are `envoy.warmswitch.WarmSwitch`'s; the leader runs it, since only the leader
writes the EnvoyFilter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from extproc.envoy.adminapi import GatewayReading
from extproc.envoy.gatewayprobe import GateSeen, GatewayProber
from extproc.envoy.gatewaystats import GatewayStats

log = logging.getLogger(__name__)

_POLL_FIRST = 0.01
_POLL_MAX = 0.25
_WARN_AFTER = 10.0
_RECHECK_UNCONFIRMABLE = 30.0
# A wildcard host (`*.example.com`) is probed under a name it matches.
_WILDCARD_LABEL = "zerohop-probe"


def probe_host(host: str) -> str:
    """The Host header that reaches the virtual host of `host`."""
    return _WILDCARD_LABEL + host[1:] if host.startswith("*") else host


class KubeGateways:
    """`SwitchedGateways` over the EnvoyFilter the leader writes and the gateway pods it probes and reads."""

    def __init__(
        self,
        write_open_hosts: Callable[[frozenset[str]], Awaitable[None]],
        stats: GatewayStats,
        probe_port: int,
        no_pods_delay: float,
        prober: GatewayProber | None = None,
    ) -> None:
        self._write = write_open_hosts
        self._stats = stats
        self._probe_port = probe_port
        self._no_pods_delay = no_pods_delay
        self.prober = prober or GatewayProber()
        self.confirmed_without_pods = 0
        # host -> the pods that all answered its probe 'gated' (confirmable while they are the pods)
        self._confirmable: dict[str, frozenset[str]] = {}
        # host -> (when to ask again, what the probes said): some pod could not answer for it
        self._unconfirmable: dict[str, tuple[float, str]] = {}

    async def switch(self, open_hosts: frozenset[str], opened: frozenset[str], closed: frozenset[str]) -> None:
        await self._write(open_hosts)
        wanted = dict.fromkeys(opened, GateSeen.OPEN) | dict.fromkeys(closed, GateSeen.GATED)
        await self._confirm(wanted)

    async def _confirm(self, wanted: dict[str, GateSeen]) -> None:
        """Return once every Ready gateway pod answers each host's probe with its wanted state. With no pod
        known, nothing can be asked and no request can pass a gateway: the fallback delay stands in."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = _POLL_FIRST
        warned = False
        confirmed: set[tuple[str, str]] = set()  # (pod name, host) seen in the wanted state
        while True:
            pods = self._stats.pods
            if not pods:
                self.confirmed_without_pods += 1
                log.warning(
                    "warm path: no Ready gateway pod known; treating the switch as in place after %.2fs",
                    self._no_pods_delay,
                )
                await asyncio.sleep(self._no_pods_delay)
                return
            asks = [(pod, host) for pod in pods for host in wanted if (pod.name, host) not in confirmed]
            if not asks:
                return
            answers = await asyncio.gather(
                *(self.prober.probe(pod.ip, self._probe_port, probe_host(host)) for pod, host in asks)
            )
            waiting = []
            for (pod, host), seen in zip(asks, answers, strict=True):
                if seen is wanted[host]:
                    confirmed.add((pod.name, host))
                else:
                    waiting.append(f"{pod.name}: {host} is {seen.value}")
            if not waiting:
                return
            if not warned and loop.time() - started > _WARN_AFTER:
                warned = True
                log.warning(
                    "warm path: gateway pods do not run the switch after %.0fs (%s); still waiting%s",
                    _WARN_AFTER,
                    ", ".join(waiting[:5]),
                    f" ({self.prober.last_error})" if self.prober.last_error else "",
                )
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 2)

    def confirmable(self, host: str) -> bool:
        checked = self._confirmable.get(host)
        return checked is not None and checked == frozenset(pod.name for pod in self._stats.pods)

    async def check_confirmable(self, hosts: Iterable[str]) -> None:
        """Probe each host (gated now) through every pod: a host every pod answers `gated` for can be switched
        and confirmed; one some pod cannot answer for (no such virtual host on the probe port: an HTTPS-only
        host; a pod whose port is blocked) is left gated, asked again after `_RECHECK_UNCONFIRMABLE`."""
        loop = asyncio.get_running_loop()
        pods = self._stats.pods
        names = frozenset(pod.name for pod in pods)
        asks = [
            host
            for host in hosts
            if self._confirmable.get(host) != names and loop.time() >= self._unconfirmable.get(host, (0.0, ""))[0]
        ]
        if not asks or not pods:
            return
        answers = await asyncio.gather(
            *(self.prober.probe(pod.ip, self._probe_port, probe_host(host)) for host in asks for pod in pods)
        )
        for index, host in enumerate(asks):
            seen = answers[index * len(pods) : (index + 1) * len(pods)]
            if all(answer is GateSeen.GATED for answer in seen):
                self._confirmable[host] = names
                self._unconfirmable.pop(host, None)
                continue
            self._confirmable.pop(host, None)
            why = ", ".join(f"{pod.name}: {answer.value}" for pod, answer in zip(pods, seen, strict=True))
            if host not in self._unconfirmable:
                log.warning(
                    "warm path: %s stays gated: its probe through the gateway pods (port %d) did not answer "
                    "'gated' everywhere (%s); an HTTPS-only host, or a pod whose port zerohop cannot reach",
                    host,
                    self._probe_port,
                    why,
                )
            self._unconfirmable[host] = (loop.time() + _RECHECK_UNCONFIRMABLE, why)

    def unconfirmable(self) -> dict[str, str]:
        """Hosts left gated because a switch of them could not be confirmed, with what the probes said."""
        return {host: why for host, (_, why) in sorted(self._unconfirmable.items())}

    async def read(self, clusters: list[str]) -> GatewayReading:
        return await self._stats.read_counters(clusters)

    def countable(self) -> str | None:
        if not self._stats.pods:
            return "no Ready gateway pod is known"
        blind = self._stats.blind_pods()
        if blind:
            self._stats.recheck_blind()
            return f"the stats of gateway pod(s) {', '.join(sorted(blind))} cannot be read (docs/istio.md)"
        return None

    async def close(self) -> None:
        await self.prober.close()
