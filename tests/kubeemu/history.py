"""The store's change log: ordered events kept for watch replay, and compaction."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from .errors import expired
from .registry import GroupResource

JsonObj = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class StoreEvent:
    """One committed change. `obj` is the state after it (the last state for DELETED)."""

    type: EventType
    gr: GroupResource
    rv: int
    obj: JsonObj
    prev: JsonObj | None

    @property
    def key(self) -> tuple[str, str]:
        meta = self.obj["metadata"]
        return meta.get("namespace", ""), meta["name"]


class History:
    """Bounded event log. Every event with rv greater than `floor` is retained."""

    def __init__(self, limit: int) -> None:
        self._events: deque[StoreEvent] = deque()
        self._limit = limit
        self.floor = 0

    def append(self, event: StoreEvent) -> None:
        self._events.append(event)
        while len(self._events) > self._limit:
            self.floor = self._events.popleft().rv

    def since(self, rv: int) -> list[StoreEvent]:
        """Events after `rv`; 410 Expired if some of them were compacted away."""
        self.check(rv)
        return [e for e in self._events if e.rv > rv]

    def check(self, rv: int) -> None:
        if rv < self.floor:
            raise expired(f"too old resource version: {rv} ({self.floor + 1})")

    def compact(self, current_rv: int) -> None:
        self._events.clear()
        self.floor = current_rv

    def __len__(self) -> int:
        return len(self._events)
