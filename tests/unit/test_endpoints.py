"""Ready endpoints per Service from EndpointSlices, indexed by Service: slices added, changed, removed and
moved between Services always give what a scan of every slice would."""

from __future__ import annotations

import random
from typing import Any

from extproc.providers.kubernetes.endpoints import ServiceEndpoints, ready_addresses, slice_service


def endpoint_slice(name: str, service: str | None, addresses: dict[str, bool]) -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service} if service else {}
    return {
        "metadata": {"namespace": "ns", "name": name, "labels": labels},
        "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a, ready in addresses.items()],
    }


def test_services_match_a_full_scan_through_random_slice_changes() -> None:
    rng = random.Random(14)
    index = ServiceEndpoints()
    slices: dict[str, dict[str, Any]] = {}
    services = ["web", "api", "db", None]
    for step in range(2000):
        name = f"s{rng.randrange(12)}"
        old = slices.get(name)
        if old is not None and rng.random() < 0.3:
            new = None
            del slices[name]
        else:
            addresses = {f"10.0.{rng.randrange(4)}.{rng.randrange(4)}": rng.random() < 0.7 for _ in range(3)}
            new = endpoint_slice(name, rng.choice(services), addresses)
            slices[name] = new
        before = {s: index.ready(("ns", s)) for s in services if s}
        changed = index.update(old, new)
        for service in (s for s in services if s):
            want_ready: set[str] = set()
            want_total = 0
            members = set()
            for slice_name, item in slices.items():
                if slice_service(item) == ("ns", service):
                    ready, total = ready_addresses(item)
                    want_ready.update(ready)
                    want_total += total
                    members.add(("ns", slice_name))
            assert index.ready(("ns", service)) == want_ready, step
            assert index.total(("ns", service)) == want_total, step
            assert index.slices(("ns", service)) == members, step
            assert (("ns", service) in changed) == (before[service] != want_ready), step
