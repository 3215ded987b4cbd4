"""When can the gateway route to a target's endpoints? Ask its Envoy (admin API), or wait a settle delay.

zerohop releases a held request only once the gateway that holds it has loaded a ready endpoint; releasing
earlier turns the cold start into Envoy's own `503 no healthy upstream`. Both providers use this: the local
one knows the exact endpoint set it published; the Kubernetes one knows the ready pod addresses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from extproc.envoy.adminapi import EnvoyAdmin, EnvoyAdminError, GatewayReading, LoadedHost

log = logging.getLogger(__name__)

_POLL_FIRST = 0.002
_POLL_MAX = 0.01
_WARN_AFTER = 10.0


class GatewayView:
    """Waits until every configured gateway Envoy has exactly the given endpoints loaded for a cluster."""

    def __init__(self, admin_urls: Sequence[str], settle_delay: float) -> None:
        self._admins = [EnvoyAdmin(url) for url in admin_urls]
        self._settle_delay = settle_delay

    @property
    def exact(self) -> bool:
        """True when routability is read from the gateways themselves, False when it is a settle delay."""
        return bool(self._admins)

    async def close(self) -> None:
        for admin in self._admins:
            await admin.close()

    async def wait_loaded(self, cluster: str, endpoints: Sequence[tuple[str, int]]) -> None:
        """Return once each Envoy routes `cluster` to exactly `endpoints` (all healthy). Never gives up:
        until then the target is not routable and its held requests wait (or time out with 504)."""
        if not self._admins:
            await asyncio.sleep(self._settle_delay)
            return
        await asyncio.gather(*(self._wait_one(admin, cluster, set(endpoints)) for admin in self._admins))

    async def active_requests(self, cluster: str) -> int | None:
        """Requests the gateways have open to `cluster` now; None when unknown (no admin API, or it failed)."""
        if not self._admins:
            return None
        try:
            counts = await asyncio.gather(*(admin.active_requests(cluster) for admin in self._admins))
        except EnvoyAdminError:
            return None
        return sum(counts)

    async def counters(self, clusters: list[str]) -> GatewayReading:
        """Each gateway's counters of `clusters`, by admin URL; a gateway that cannot be read is an error."""
        answers = await asyncio.gather(
            *(admin.cluster_counters(clusters) for admin in self._admins), return_exceptions=True
        )
        reading = GatewayReading()
        for admin, answer in zip(self._admins, answers, strict=True):
            if isinstance(answer, EnvoyAdminError):
                reading.errors[admin.url] = str(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                reading.counters[admin.url] = answer
        return reading

    async def wait_route_version(self, name: str, version: Callable[[], str]) -> str:
        """Return once every gateway has loaded route configuration `name` at the version `version()` gives
        (read at each poll: a newer write replaces the one waited for); returns the version confirmed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = _POLL_FIRST
        warned = False
        while True:
            wanted = version()
            try:
                loaded = await asyncio.gather(*(admin.route_config_version(name) for admin in self._admins))
            except EnvoyAdminError as exc:
                loaded = []
                if not warned and loop.time() - started > _WARN_AFTER:
                    log.warning("gateway admin unreachable while switching the warm path: %s", exc)
                    warned = True
            if loaded and all(v == wanted for v in loaded) and version() == wanted:
                return wanted
            if not warned and loop.time() - started > _WARN_AFTER:
                log.warning("gateways have route config versions %s, not %s, after %.0fs", loaded, wanted, _WARN_AFTER)
                warned = True
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX * 5, delay * 2)

    async def wait_any(self, cluster: str, addresses: set[str]) -> None:
        """Return once each Envoy has at least one healthy endpoint of `cluster` at one of `addresses`."""
        if not self._admins:
            await asyncio.sleep(self._settle_delay)
            return

        def loaded(hosts: list[LoadedHost]) -> bool:
            return any(h.healthy and h.address in addresses for h in hosts)

        await asyncio.gather(*(self._poll(admin, cluster, loaded, str(sorted(addresses))) for admin in self._admins))

    async def _wait_one(self, admin: EnvoyAdmin, cluster: str, want: set[tuple[str, int]]) -> None:
        def loaded(hosts: list[LoadedHost]) -> bool:
            return len(hosts) == len(want) and {(h.address, h.port) for h in hosts if h.healthy} == want

        await self._poll(admin, cluster, loaded, str(sorted(want)))

    async def _poll(self, admin: EnvoyAdmin, cluster: str, done: Callable[[list[LoadedHost]], bool], what: str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = _POLL_FIRST
        warned = False
        while True:
            try:
                hosts = (await admin.cluster_hosts()).get(cluster)
            except EnvoyAdminError as exc:
                hosts = None
                if not warned and loop.time() - started > _WARN_AFTER:
                    log.warning("gateway admin %s unreachable while publishing %s: %s", admin.url, cluster, exc)
                    warned = True
            if hosts is not None and done(hosts):
                return
            if not warned and loop.time() - started > _WARN_AFTER:
                log.warning(
                    "gateway %s has not loaded %s endpoints %s after %.0fs",
                    admin.url,
                    cluster,
                    what,
                    _WARN_AFTER,
                )
                warned = True
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 2)
