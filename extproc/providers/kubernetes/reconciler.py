"""What the leader writes: a ScaledObject per HTTPScaledObject, each HTTPScaledObject's status, and (optionally)
the EnvoyFilter scoping ext_proc to the gateway hosts they name.

Runs are coalesced (many changes, one pass) and idempotent: each pass compares the caches with what should
be and writes only differences, so a restart, a new leader or a relist converges without churn.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from extproc.core.background import BackgroundTasks
from extproc.core.httpso import SKIP_SCALEDOBJECT_ANNOTATION, TargetKey
from extproc.envoy import istio
from extproc.providers.kubernetes import scaledobjects
from extproc.providers.kubernetes.api import (
    ENVOYFILTERS,
    HTTPSCALEDOBJECTS,
    SCALEDOBJECTS,
    JsonObj,
    KubeApi,
    KubeError,
)
from extproc.providers.kubernetes.targets import Condition, TargetTable

log = logging.getLogger(__name__)

_RESYNC = 60.0


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """What the leader writes and where (`app.server.kubernetes_provider` fills it from Settings)."""

    scaler_address: str
    manage_scaledobjects: bool
    manage_envoyfilters: bool
    zerohop_namespace: str
    service_name: str
    hold_timeout: float
    gateway_namespace: str
    gateway_selector: Mapping[str, str]
    gateway_ports: tuple[int, ...]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


class Reconciler:
    """Runs while this replica leads; `trigger()` after any change to what it reads."""

    def __init__(
        self,
        api: KubeApi,
        options: ReconcileOptions,
        table: Callable[[], TargetTable],
        httpsos: Callable[[], Mapping[tuple[str, str], JsonObj]],
        scaled_objects: Callable[[], Mapping[tuple[str, str], JsonObj]],
        gateway: Callable[[], Condition | None] = lambda: None,
    ) -> None:
        self._api = api
        self.options = options
        self._table = table
        self._httpsos = httpsos
        self._scaled_objects = scaled_objects
        self._gateway = gateway
        self._wake = asyncio.Event()
        self._tasks = BackgroundTasks()
        self.writes = 0
        self._envoyfilter_hosts: tuple[str, ...] | None = None

    def start(self) -> None:
        self._wake.set()
        # A fresh owner each time: the reconciler stops when leadership is lost and starts again when regained.
        self._tasks = BackgroundTasks()
        self._tasks.spawn(self._loop(), name="reconciler")

    async def stop(self) -> None:
        await self._tasks.close()

    def trigger(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _RESYNC)
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile pass failed; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def reconcile(self) -> None:
        table = self._table()
        targets = {t.key: t for t in table.targets}
        scaled = self._scaled_objects()
        gateway = self._gateway()
        for (namespace, name), document in list(self._httpsos().items()):
            key = TargetKey(namespace, name)
            condition = table.conditions.get(key) or Condition(False, "Unknown", "not processed yet")
            target = targets.get(key)
            metadata = document.get("metadata") or {}
            annotations = metadata.get("annotations") or {}
            if (
                target is not None
                and self.options.manage_scaledobjects
                and not _truthy(annotations.get(SKIP_SCALEDOBJECT_ANNOTATION))
            ):
                problem = await self._scaled_object(
                    target, str(metadata.get("uid") or ""), scaled.get((namespace, name))
                )
                if problem is not None:
                    condition = problem
            await self._status(document, condition, table.generations.get(key, 0), target, gateway)
        if self.options.manage_envoyfilters:
            await self._envoyfilter(sorted({h for t in table.targets for h in t.hosts if h != "*"}))

    async def _scaled_object(self, target: Any, uid: str, current: JsonObj | None) -> Condition | None:
        wanted = scaledobjects.desired(target, uid, self.options.scaler_address)
        namespace, name = target.key
        try:
            if current is None:
                await self._api.create(SCALEDOBJECTS, namespace, wanted)
                self.writes += 1
                log.info("created ScaledObject %s", target.key)
                return None
            if not scaledobjects.owned_by(current, uid):
                return Condition(
                    False,
                    "ScaledObjectConflict",
                    f"ScaledObject {target.key} exists and is not managed by zerohop; "
                    f"remove it or annotate the HTTPScaledObject with {SKIP_SCALEDOBJECT_ANNOTATION}: 'true'",
                )
            patch = scaledobjects.drift(current, wanted)
            if patch is not None:
                await self._api.patch(SCALEDOBJECTS, namespace, name, patch)
                self.writes += 1
                log.info("updated ScaledObject %s", target.key)
        except KubeError as exc:
            if exc.code == 409 and current is None:
                return None  # created by a racing pass; the next pass compares it
            log.warning("ScaledObject %s: %s", target.key, exc)
            return Condition(False, "CreateError", f"writing ScaledObject {target.key}: {exc.message or exc}")
        return None

    async def _status(
        self, document: JsonObj, condition: Condition, generation: int, target: Any, gateway: Condition | None
    ) -> None:
        patch = scaledobjects.status_patch(document, condition, generation, target, _now(), gateway)
        if patch is None:
            return
        metadata = document.get("metadata") or {}
        try:
            await self._api.patch(
                HTTPSCALEDOBJECTS, metadata.get("namespace"), str(metadata.get("name")), patch, subresource="status"
            )
            self.writes += 1
        except KubeError as exc:
            if exc.code != 404:
                log.warning(
                    "status of HTTPScaledObject %s/%s: %s", metadata.get("namespace"), metadata.get("name"), exc
                )

    async def _envoyfilter(self, hosts: list[str]) -> None:
        if self._envoyfilter_hosts == tuple(hosts):
            return
        options = self.options
        wanted = istio.envoyfilter(
            options.zerohop_namespace,
            service_name=options.service_name,
            hold_timeout=options.hold_timeout,
            gateway_namespace=options.gateway_namespace,
            selector=options.gateway_selector,
            hosts=hosts,
            ports=options.gateway_ports,
        )
        name = wanted["metadata"]["name"]
        current = await self._api.get(ENVOYFILTERS, options.gateway_namespace, name)
        if current is None:
            await self._api.create(ENVOYFILTERS, options.gateway_namespace, wanted)
        elif current.get("spec") != wanted["spec"]:
            # A replace, not a merge patch: a merge would keep labels of an old workloadSelector.
            await self._api.replace(ENVOYFILTERS, options.gateway_namespace, name, {**current, "spec": wanted["spec"]})
        else:
            self._envoyfilter_hosts = tuple(hosts)
            return
        self.writes += 1
        self._envoyfilter_hosts = tuple(hosts)
        log.info("EnvoyFilter %s/%s enables zerohop on %d host(s)", options.gateway_namespace, name, len(hosts))
