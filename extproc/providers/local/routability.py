"""When can the gateway route to a new set of endpoints? Ask its Envoy (admin API), or wait a settle delay.

zerohop releases a held request only once the gateway that holds it has loaded a ready endpoint; releasing
earlier turns the cold start into Envoy's own `503 no healthy upstream`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from extproc.envoyadmin import EnvoyAdmin, EnvoyAdminError

log = logging.getLogger(__name__)

_POLL_FIRST = 0.002
_POLL_MAX = 0.01
_WARN_AFTER = 10.0


class GatewayView:
    """Waits until every configured gateway Envoy has exactly the given endpoints loaded for a cluster."""

    def __init__(self, admin_urls: Sequence[str], settle_delay: float) -> None:
        self._admins = [EnvoyAdmin(url) for url in admin_urls]
        self._settle_delay = settle_delay

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

    async def _wait_one(self, admin: EnvoyAdmin, cluster: str, want: set[tuple[str, int]]) -> None:
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
            loaded = {(h.address, h.port) for h in hosts if h.healthy} if hosts is not None else None
            if loaded == want and hosts is not None and len(hosts) == len(want):
                return
            if not warned and loop.time() - started > _WARN_AFTER:
                log.warning(
                    "gateway %s has not loaded %s endpoints %s after %.0fs",
                    admin.url,
                    cluster,
                    sorted(want),
                    _WARN_AFTER,
                )
                warned = True
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 2)
