"""Ready endpoints per Service, from EndpointSlices (`kubernetes.io/service-name`).

An endpoint is ready when `conditions.ready` is unset or true, as the EndpointSlice API defines it; a
Service is the union of its slices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SERVICE_LABEL = "kubernetes.io/service-name"

ServiceKey = tuple[str, str]


def slice_service(endpoint_slice: Mapping[str, Any]) -> ServiceKey | None:
    metadata = endpoint_slice.get("metadata") or {}
    service = (metadata.get("labels") or {}).get(SERVICE_LABEL)
    return (str(metadata.get("namespace") or ""), str(service)) if service else None


def ready_addresses(endpoint_slice: Mapping[str, Any]) -> tuple[list[str], int]:
    """The ready addresses of a slice, and how many endpoints it lists in all."""
    ready: list[str] = []
    endpoints = endpoint_slice.get("endpoints") or []
    for endpoint in endpoints:
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is not False:
            ready.extend(str(address) for address in endpoint.get("addresses") or [])
    return ready, len(endpoints)


def slice_port(endpoint_slice: Mapping[str, Any], name: str | None = None) -> int | None:
    """The slice's port with `name` (or its only port when `name` is None)."""
    ports = endpoint_slice.get("ports") or []
    for port in ports:
        if name is None or port.get("name") == name:
            value = port.get("port")
            return int(value) if isinstance(value, int) else None
    return None


class ServiceEndpoints:
    """Ready addresses and endpoint counts of every Service, kept from EndpointSlice changes.

    Slices are indexed by Service, so one slice event recomputes only the Service(s) it belongs to (before
    and after: a slice can be relabelled to another Service), never a scan of every slice.
    """

    def __init__(self) -> None:
        self._slices: dict[tuple[str, str], tuple[ServiceKey, list[str], int]] = {}
        self._by_service: dict[ServiceKey, set[tuple[str, str]]] = {}
        self._ready: dict[ServiceKey, set[str]] = {}
        self._total: dict[ServiceKey, int] = {}

    def update(self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> set[ServiceKey]:
        """Apply one slice change; returns the Services whose ready endpoints changed."""
        changed: set[ServiceKey] = set()
        source = new or old or {}
        metadata = source.get("metadata") or {}
        slice_key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        previous = self._slices.pop(slice_key, None)
        if previous is not None:
            changed.add(previous[0])
            members = self._by_service.get(previous[0])
            if members is not None:
                members.discard(slice_key)
                if not members:
                    del self._by_service[previous[0]]
        if new is not None:
            service = slice_service(new)
            if service is not None:
                ready, total = ready_addresses(new)
                self._slices[slice_key] = (service, ready, total)
                self._by_service.setdefault(service, set()).add(slice_key)
                changed.add(service)
        really_changed: set[ServiceKey] = set()
        for service in changed:
            before = self._ready.get(service, set())
            ready_now: set[str] = set()
            total = 0
            for member in self._by_service.get(service, ()):
                _owner, ready, count = self._slices[member]
                ready_now.update(ready)
                total += count
            if ready_now or total:
                self._ready[service] = ready_now
                self._total[service] = total
            else:
                # A Service whose last slice went costs nothing to remember.
                self._ready.pop(service, None)
                self._total.pop(service, None)
            if ready_now != before:
                really_changed.add(service)
        return really_changed

    def ready(self, service: ServiceKey) -> set[str]:
        return set(self._ready.get(service, ()))

    def total(self, service: ServiceKey) -> int:
        return self._total.get(service, 0)

    def slices(self, service: ServiceKey) -> set[tuple[str, str]]:
        """The (namespace, name) of every slice that belongs to `service` now."""
        return set(self._by_service.get(service, ()))
