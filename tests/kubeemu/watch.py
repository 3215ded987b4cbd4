"""WATCH: replay from the event history, live events, bookmarks, timeouts, and the
hub that lets tests end every open watch cleanly or abruptly.

Event filtering follows the apiserver's watch cache: with a selector, an
object that starts matching arrives as ADDED, one that stops matching as
DELETED (carrying its previous content at the new resourceVersion).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web

from . import errors
from .history import StoreEvent
from .listing import Selection, parse_rv
from .objects import meta, present
from .registry import ResourceType
from .requestlog import RECORD_KEY
from .store import Store

JsonObj = dict[str, Any]
WireEvent = tuple[str, JsonObj]  # (type, object as served)


class _Control(Enum):
    CLOSE = "close"
    DROP = "drop"


@dataclass(frozen=True)
class WatchParams:
    resource_version: str | None = None
    allow_bookmarks: bool = False
    timeout_seconds: float | None = None
    send_initial_events: bool = False


@dataclass(eq=False)
class WatchSession:
    rt: ResourceType
    namespace: str | None
    selection: Selection
    request: web.Request
    queue: asyncio.Queue[StoreEvent | _Control] = field(default_factory=asyncio.Queue)

    def convert(self, event: StoreEvent) -> WireEvent | None:
        if event.gr != self.rt.group_resource:
            return None
        if self.namespace is not None and event.key[0] != self.namespace:
            return None
        now_passes = event.type != "DELETED" and self.selection.matches(event.obj)
        was_passing = event.prev is not None and self.selection.matches(event.prev)
        if now_passes:
            kind = "MODIFIED" if was_passing else "ADDED"
            return kind, present(self.rt, event.obj)
        if was_passing and event.prev is not None:
            gone = present(self.rt, event.prev)
            meta(gone)["resourceVersion"] = str(event.rv)
            return "DELETED", gone
        return None

    def bookmark(self, rv: int, *, initial_end: bool = False) -> WireEvent:
        md: JsonObj = {"resourceVersion": str(rv)}
        if self.rt.builtin:
            md["creationTimestamp"] = None
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return "BOOKMARK", {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": md}


class WatchHub:
    """Open watch streams, for fan-out from the store and for fault injection."""

    def __init__(self, store: Store, *, bookmark_interval: float = 1.0) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.sessions: set[WatchSession] = set()
        self._unsubscribe = store.subscribe(self._fan_out)

    def close(self) -> None:
        self._unsubscribe()

    def _fan_out(self, event: StoreEvent) -> None:
        for session in list(self.sessions):
            session.queue.put_nowait(event)

    def close_all(self) -> int:
        """End every watch cleanly (terminating chunk), as on a server-side timeout."""
        for session in self.sessions:
            session.queue.put_nowait(_Control.CLOSE)
        return len(self.sessions)

    def drop_all(self) -> int:
        """Cut every watch connection without ending the HTTP response."""
        count = len(self.sessions)
        for session in list(self.sessions):
            transport = session.request.transport
            if transport is not None:
                transport.abort()
            session.queue.put_nowait(_Control.DROP)
        self.sessions.clear()
        return count

    def _initial(self, session: WatchSession, params: WatchParams) -> list[WireEvent]:
        """Events to send before live ones; raises 410 if the start is compacted."""
        rt, store = session.rt, self.store
        if params.resource_version in (None, "", "0"):
            namespace = session.namespace if rt.namespaced else None
            objs = [o for o in store.items(rt.group_resource, namespace) if session.selection.matches(o)]
            events: list[WireEvent] = [("ADDED", present(rt, o)) for o in objs]
            if params.send_initial_events and params.allow_bookmarks:
                events.append(session.bookmark(store.resource_version, initial_end=True))
            return events
        start = parse_rv(params.resource_version)
        converted = (session.convert(e) for e in store.history.since(start))
        return [e for e in converted if e is not None]

    async def serve(
        self, request: web.Request, rt: ResourceType, namespace: str | None, selection: Selection, params: WatchParams
    ) -> web.StreamResponse:
        session = WatchSession(rt, namespace, selection, request)
        # Subscribing and reading the history happen with no await in between,
        # so no event can fall into a gap between replay and live delivery.
        self.sessions.add(session)
        try:
            return await self._serve(request, session, params)
        finally:
            self.sessions.discard(session)

    async def _serve(self, request: web.Request, session: WatchSession, params: WatchParams) -> web.StreamResponse:
        failure: errors.ApiError | None = None
        try:
            initial = self._initial(session, params)
        except errors.ApiError as exc:
            initial, failure = [], exc
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            record = request.get(RECORD_KEY)
            if record is not None:
                record.status = 200
            if failure is not None:
                await _send(response, ("ERROR", failure.status()))
            else:
                for event in initial:
                    await _send(response, event)
                if not await self._stream(session, response, params):
                    return response
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    async def _stream(self, session: WatchSession, response: web.StreamResponse, params: WatchParams) -> bool:
        """Pump events until timeout or close; False if the connection was dropped."""
        loop_time = time.monotonic
        deadline = loop_time() + params.timeout_seconds if params.timeout_seconds else None
        next_bookmark = loop_time() + self.bookmark_interval
        while True:
            wake_at = [t for t in (deadline, next_bookmark if params.allow_bookmarks else None) if t is not None]
            wait = max(0.0, min(wake_at) - loop_time()) if wake_at else None
            try:
                item = await asyncio.wait_for(session.queue.get(), wait)
            except TimeoutError:
                if deadline is not None and loop_time() >= deadline:
                    return True
                if session.queue.empty():
                    await _send(response, session.bookmark(self.store.resource_version))
                next_bookmark = loop_time() + self.bookmark_interval
                continue
            if item is _Control.CLOSE:
                return True
            if item is _Control.DROP:
                return False
            assert isinstance(item, StoreEvent)
            wire = session.convert(item)
            if wire is not None:
                await _send(response, wire)


async def _send(response: web.StreamResponse, event: WireEvent) -> None:
    line = json.dumps({"type": event[0], "object": event[1]}, separators=(",", ":")) + "\n"
    await response.write(line.encode())
