"""Bring the objects a pretend controller owns in one namespace in line with the ones it wants."""

from __future__ import annotations

from typing import Any

from .registry import ResourceType
from .store import Store

JsonObj = dict[str, Any]


def sync_owned(
    store: Store,
    rt: ResourceType,
    namespace: str,
    existing: dict[str, JsonObj],
    wanted: dict[str, JsonObj],
    fields: tuple[str, ...],
) -> None:
    """Deletes the owned objects (`existing`, by name) no longer wanted, creates the wanted ones missing, and
    updates the others whose metadata (the wanted merged over the current) or `fields` differ. An ApiError (a
    conflict with a concurrent write) goes to the caller, which marks the namespace or key to try again."""
    for name in existing:
        if name not in wanted:
            store.delete(rt, namespace, name)
    for name, obj in wanted.items():
        current = existing.get(name)
        if current is None:
            store.create(rt, obj)
            continue
        updated = {**current, "metadata": {**current["metadata"], **obj["metadata"]}}
        for field in fields:
            updated[field] = obj[field]
        if updated != current:
            store.update(rt, updated)
