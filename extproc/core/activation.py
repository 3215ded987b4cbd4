"""Activation fan-out: "target K must wake now" delivered to every listener without polling.

The cold gate publishes here; KEDA's StreamIsActive streams (and, across replicas, peers) subscribe.
Events for the same key coalesce while a subscriber is busy: a wake is a level, not a count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from extproc.core.httpso import TargetKey


class Subscription:
    """Pending wake events for one key (or every key when `key` is None)."""

    __slots__ = ("_bus", "_event", "_pending", "key", "local_only")

    def __init__(self, bus: ActivationBus, key: TargetKey | None, local_only: bool = False) -> None:
        self._bus = bus
        self.key = key
        self.local_only = local_only
        self._pending: list[TargetKey] = []
        self._event = asyncio.Event()

    def _push(self, key: TargetKey) -> None:
        if key not in self._pending:
            self._pending.append(key)
        self._event.set()

    async def next(self) -> list[TargetKey]:
        """Wait for at least one wake; return every key woken since the last call."""
        await self._event.wait()
        self._event.clear()
        keys, self._pending = self._pending, []
        return keys

    def close(self) -> None:
        self._bus._remove(self)

    async def __aiter__(self) -> AsyncIterator[list[TargetKey]]:
        while True:
            yield await self.next()


class ActivationBus:
    """Publish wakes by key; subscribers are woken in the same loop iteration."""

    def __init__(self) -> None:
        self._by_key: dict[TargetKey | None, set[Subscription]] = {}
        self.published = 0

    def subscribe(self, key: TargetKey | None = None, *, local_only: bool = False) -> Subscription:
        """Wakes of `key` (every key when None); `local_only` leaves out wakes relayed from peers."""
        subscription = Subscription(self, key, local_only)
        self._by_key.setdefault(key, set()).add(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        subscribers = self._by_key.get(subscription.key)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._by_key[subscription.key]

    def publish(self, key: TargetKey, *, local: bool = True) -> None:
        """A wake of `key`: from a cold request here (`local`), or relayed from a peer replica."""
        self.published += 1
        for subscription in (*self._by_key.get(key, ()), *self._by_key.get(None, ())):
            if local or not subscription.local_only:
                subscription._push(key)

    def subscribers(self, key: TargetKey) -> int:
        return len(self._by_key.get(key, ()))
