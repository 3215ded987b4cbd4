"""A list-then-watch cache of one resource type, as controllers keep them.

List, then watch from the list's resourceVersion with bookmarks (so a reconnect resumes from a recent
version); on 410 list again and report the difference as events, so nothing is lost or repeated; on a
dropped connection or an unreachable API server retry with backoff while the cache keeps serving the last
known state. Consumers get (type, old, new) callbacks and can wait for the first sync.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from extproc.core.background import BackgroundTasks
from extproc.providers.kubernetes import heap
from extproc.providers.kubernetes.api import Gone, JsonObj, KubeApi, KubeError, Resource, object_key, resource_version

log = logging.getLogger(__name__)

ChangeHandler = Callable[[str, JsonObj | None, JsonObj | None], None]

_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 30.0
_WATCH_SECONDS = (240, 300)


@dataclass(frozen=True, slots=True)
class InformerStatus:
    """One watch at one moment: its health for /status and the Kubernetes metrics."""

    resource: str
    synced: bool
    connected: bool
    objects: int
    relists: int
    restarts: int
    last_error: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "synced": self.synced,
            "connected": self.connected,
            "objects": self.objects,
            "relists": self.relists,
            "restarts": self.restarts,
            "lastError": self.last_error,
        }


class Informer:
    """Keeps `cache` equal to the server's objects of `resource` (in `namespace`, or all namespaces)."""

    def __init__(
        self,
        api: KubeApi,
        resource: Resource,
        on_change: ChangeHandler,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.cache: dict[tuple[str, str], JsonObj] = {}
        self.synced = asyncio.Event()
        self.connected = False
        self.relists = 0
        self.restarts = 0
        self.last_error = ""
        self._on_change = on_change
        self._version = ""
        self._tasks = BackgroundTasks()

    @property
    def name(self) -> str:
        scope = self.namespace or "all namespaces"
        selectors = "".join(f", {s}" for s in (self.label_selector, self.field_selector) if s)
        return f"{self.resource.plural} ({scope}{selectors})"

    def start(self) -> None:
        self._tasks.spawn(self.run(), name=f"informer {self.name}")

    async def stop(self) -> None:
        await self._tasks.close()

    async def run(self) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            try:
                if not self._version:
                    await self._relist()
                await self._watch()
                backoff = _BACKOFF_FIRST
            except Gone:
                log.info("%s: resourceVersion %s expired; listing again", self.name, self._version)
                self._version = ""
            except KubeError as exc:
                self._disconnected(str(exc))
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(_BACKOFF_MAX, backoff * 2)
            except Exception as exc:
                log.exception("%s: unexpected failure", self.name)
                self._disconnected(repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(_BACKOFF_MAX, backoff * 2)

    def _disconnected(self, error: str) -> None:
        if self.connected or not self.last_error:
            log.warning("%s: API server unavailable, serving the last known state: %s", self.name, error)
        self.connected = False
        self.last_error = error
        self.restarts += 1

    def _connected(self) -> None:
        if not self.connected and self.last_error:
            log.info("%s: API server reachable again", self.name)
        self.connected = True

    async def _relist(self) -> None:
        if not self.cache:
            await self._first_list()
            return
        items, version = await self.api.list(
            self.resource, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        self._connected()
        fresh = {object_key(item): item for item in items}
        heap.took(len(fresh))
        old = self.cache
        self.cache = fresh
        if self.synced.is_set():
            self.relists += 1
        for key, item in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", None, item)
            elif resource_version(before) != resource_version(item):
                self._emit("MODIFIED", before, item)
        for key, item in old.items():
            if key not in fresh:
                self._emit("DELETED", item, None)
        self._version = version
        self.synced.set()

    async def _first_list(self) -> None:
        """With nothing cached every object is new: each page is reported as it arrives, so what consumers
        derive from it overlaps reading the next. A list that breaks off leaves its pages cached; the next
        list compares with them as any relist does."""
        version = ""
        pages = self.api.pages(
            self.resource, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        async for page, page_version in pages:
            self._connected()
            version = page_version
            for item in page:
                key = object_key(item)
                before = self.cache.get(key)
                self.cache[key] = item
                self._emit("MODIFIED" if before is not None else "ADDED", before, item)
        if self.synced.is_set():
            self.relists += 1
        self._version = version
        self.synced.set()

    async def _watch(self) -> None:
        timeout = random.randint(*_WATCH_SECONDS)
        async for event in self.api.watch(
            self.resource,
            self.namespace,
            self._version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=timeout,
        ):
            self._connected()
            kind = event.get("type")
            obj: JsonObj = event.get("object") or {}
            version = resource_version(obj)
            if kind == "BOOKMARK":
                self._version = version or self._version
                continue
            key = object_key(obj)
            before = self.cache.get(key)
            if kind in ("ADDED", "MODIFIED"):
                self.cache[key] = obj
                heap.took()
                self._emit("MODIFIED" if before is not None else "ADDED", before, obj)
            elif kind == "DELETED":
                self.cache.pop(key, None)
                if before is not None:
                    self._emit("DELETED", before, None)
            self._version = version or self._version

    def _emit(self, kind: str, old: JsonObj | None, new: JsonObj | None) -> None:
        try:
            self._on_change(kind, old, new)
        except Exception:
            log.exception("%s: change handler failed", self.name)

    def status(self) -> InformerStatus:
        return InformerStatus(
            self.name,
            self.synced.is_set(),
            self.connected,
            len(self.cache),
            self.relists,
            self.restarts,
            self.last_error,
        )
