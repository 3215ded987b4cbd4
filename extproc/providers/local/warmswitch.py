"""The local provider's side of the warm path: a switch is a rewrite of the gateway's route file, confirmed
once every gateway's admin API reports that route version loaded; counts come from each admin's stats.

The loop and the counting are `envoy.warmswitch.WarmSwitch`'s; this is the I/O it asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from extproc.envoy.adminapi import GatewayReading
from extproc.envoy.config import ROUTE_CONFIG_NAME
from extproc.envoy.gatewayview import GatewayView


class LocalGateways:
    """`SwitchedGateways` over the route file zerohop writes and the gateways' admin APIs.
    `write_routes(open_hosts)` rewrites the route file; `routes_version()` is the last version written."""

    def __init__(
        self,
        gateway: GatewayView,
        write_routes: Callable[[frozenset[str]], None],
        routes_version: Callable[[], str],
    ) -> None:
        self._gateway = gateway
        self._write_routes = write_routes
        self._routes_version = routes_version

    async def switch(self, open_hosts: frozenset[str], opened: frozenset[str], closed: frozenset[str]) -> None:
        self._write_routes(open_hosts)
        await self._gateway.wait_route_version(ROUTE_CONFIG_NAME, self._routes_version)

    async def read(self, clusters: list[str]) -> GatewayReading:
        return await self._gateway.counters(clusters)

    def countable(self) -> str | None:
        return None  # every admin is read each round; a failed read shows in the loop's scrape health

    def confirmable(self, host: str) -> bool:
        return True  # every switch is one route file, whose loaded version each admin reports

    async def check_confirmable(self, hosts: Iterable[str]) -> None:
        return None
