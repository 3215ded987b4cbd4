"""What the leader writes: a ScaledObject per HTTPScaledObject, each HTTPScaledObject's and InterceptorRoute's
status, and (optionally) the EnvoyFilter scoping ext_proc to the gateway hosts they name.

Runs are coalesced (many changes, one pass) and idempotent: each pass compares the caches with what should
be and writes only differences, so a restart, a new leader or a relist converges without churn. A pass plans
on the event loop in steps of at most `_PLAN_STEP` seconds and hands the writes to `_WORKERS` concurrent
writers, which the API client's bulk rate limiter paces; a write the watch has not shown back yet is not
repeated by the next pass (`_pending`). An object whose inputs (its and its ScaledObject's resourceVersion,
condition, generation, target and the gateway condition) are those it had when it last needed no write is
not compared again (`_settled`), so the pass every status event triggers costs a lookup per object.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from extproc.core import giveway, iroute
from extproc.core.background import BackgroundTasks
from extproc.core.httpso import SKIP_SCALEDOBJECT_ANNOTATION, ScaledTarget, TargetKey
from extproc.envoy import istio
from extproc.providers.kubernetes import scaledobjects
from extproc.providers.kubernetes.api import (
    ENVOYFILTERS,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SCALEDOBJECTS,
    JsonObj,
    KubeApi,
    KubeError,
    Resource,
    resource_version,
)
from extproc.providers.kubernetes.targets import Condition, TargetTable, route_condition

log = logging.getLogger(__name__)

_RESYNC = 60.0
# Writes in flight at once; the rate limiter, not this, sets the pace (enough to keep up with a few hundred
# requests per second at tens of milliseconds each, few enough that another request waits briefly behind them).
_WORKERS = 8
# Seconds of planning between two pauses (`giveway`): a pass over 10,000 targets never stalls requests.
_PLAN_STEP = giveway.SLICE
# How long a write is trusted to show up in the watch before the next pass would write it again.
_PENDING_TTL = 30.0


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


@dataclass(slots=True)
class _Work:
    """The writes one HTTPScaledObject needs: its ScaledObject (create or patch), then its status."""

    document: JsonObj
    condition: Condition
    generation: int
    target: ScaledTarget | None
    gateway: Condition | None
    create: JsonObj | None = None
    patch: JsonObj | None = None
    scaled_version: str = ""
    status: bool = True
    waiting: bool = False  # a write was left out because the caches do not show the last one yet
    resource: Resource = HTTPSCALEDOBJECTS  # whose status: an HTTPScaledObject's or an InterceptorRoute's


_UNKNOWN = Condition(False, "Unknown", "not processed yet")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generation(document: JsonObj) -> int:
    return int((document.get("metadata") or {}).get("generation") or 0)


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
        routes: Callable[[], Mapping[tuple[str, str], JsonObj]] = dict,
        *,
        resolve_port: istio.PortResolver | None = None,
    ) -> None:
        # Thousands of writes may wait for tokens here; the lease and scale-from-zero keep the main limiter.
        self._api = api.bulk()
        self.options = options
        self._table = table
        self._httpsos = httpsos
        self._scaled_objects = scaled_objects
        self._gateway = gateway
        self._routes = routes
        self._wake = asyncio.Event()
        self._tasks = BackgroundTasks()
        self.writes = 0
        self.passes = 0
        # (kind, namespace, name) -> (the resourceVersion a write was based on, until when to trust it).
        self._pending: dict[tuple[str, str, str], tuple[str, float]] = {}
        # (namespace, name) -> what a pass read when the object needed no write (see `_plan`).
        self._settled: dict[tuple[str, str], tuple[object, ...]] = {}
        # (managed hosts, open hosts or None without the warm path) of the EnvoyFilter last written.
        self._envoyfilter_written: (
            tuple[tuple[str, ...], tuple[str, ...] | None, tuple[istio.FailoverRoute, ...]] | None
        ) = None
        self._envoyfilter_lock = asyncio.Lock()
        # --warm-path open: the hosts left without ext_proc (set by the warm path); None: the warm path is off.
        self._open_hosts: frozenset[str] | None = None
        # Routes to the targets' fallback Services in the EnvoyFilter (named ports resolved from Services).
        self._resolve_port = resolve_port

    def start(self) -> None:
        self._wake.set()
        self._settled = {}  # a new term compares everything afresh
        # A fresh owner each time: the reconciler stops when leadership is lost and starts again when regained.
        self._tasks = BackgroundTasks()
        self._tasks.spawn(self._loop(), name="reconciler")

    async def stop(self) -> None:
        await self._tasks.close()

    def trigger(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            # Not wait_for: on 3.11 it swallows a cancel that lands as the event is set, and stop() hung.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RESYNC):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile pass failed; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def reconcile(self) -> None:
        queue: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=_WORKERS)
        async with asyncio.TaskGroup() as writers:
            for _ in range(_WORKERS):
                writers.create_task(self._writer(queue))
            await self._plan(queue)  # on an error the group cancels the writers
            for _ in range(_WORKERS):
                await queue.put(None)
        self.passes += 1

    async def _plan(self, queue: asyncio.Queue[_Work | None]) -> None:
        table = self._table()
        scaled = self._scaled_objects()
        gateway = self._gateway()
        now = time.monotonic()
        self._pending = {k: v for k, v in self._pending.items() if v[1] > now}
        documents = self._httpsos()
        if len(self._settled) > len(documents):
            self._settled = {k: v for k, v in self._settled.items() if k in documents}
        step_ends = time.monotonic() + _PLAN_STEP
        for (namespace, name), document in list(documents.items()):
            if time.monotonic() >= step_ends:
                await giveway.give_way()
                step_ends = time.monotonic() + _PLAN_STEP
            key = TargetKey(namespace, name)
            current = scaled.get((namespace, name))
            condition = table.conditions.get(key) or _UNKNOWN
            target = table.by_key.get(key)
            generation = table.generations.get(key, 0)
            # Everything a plan reads; the same as when this object last needed no write: it needs none now.
            inputs = (
                resource_version(document),
                resource_version(current) if current is not None else None,
                condition,
                generation,
                target,
                gateway,
            )
            if self._settled.get((namespace, name)) == inputs:
                continue
            work = _Work(document, condition, generation, target, gateway)
            metadata = document.get("metadata") or {}
            annotations = metadata.get("annotations") or {}
            if (
                target is not None
                and self.options.manage_scaledobjects
                and not _truthy(annotations.get(SKIP_SCALEDOBJECT_ANNOTATION))
            ):
                self._plan_scaled_object(work, target, str(metadata.get("uid") or ""), current)
            if self._is_pending(("status", namespace, name), resource_version(document)):
                work.status = False
                work.waiting = True
            elif work.create is None and work.patch is None:
                work.status = self._status_patch(work, work.condition) is not None
            if work.status or work.create is not None or work.patch is not None:
                self._settled.pop((namespace, name), None)
                await queue.put(work)
            elif not work.waiting:
                self._settled[(namespace, name)] = inputs
        targets = table.by_key
        for (namespace, name), document in list(self._routes().items()):
            if time.monotonic() >= step_ends:
                await giveway.give_way()
                step_ends = time.monotonic() + _PLAN_STEP
            # InterceptorRoutes: their status only (the user writes their ScaledObject).
            key = TargetKey(namespace, name)
            served = table.entries.get(key)
            mine = served is not None and served.kind == iroute.KIND  # else an HTTPScaledObject holds the name
            condition = route_condition(table, key) or _UNKNOWN
            generation = served.generation if served is not None and mine else _generation(document)
            target = targets.get(key) if mine else None
            work = _Work(document, condition, generation, target, gateway, resource=INTERCEPTORROUTES)
            if self._is_pending(("route-status", namespace, name), resource_version(document)):
                continue
            if self._status_patch(work, condition) is not None:
                await queue.put(work)
        if self.options.manage_scaledobjects:
            await self._route_hashes(targets, scaled)
        if self.options.manage_envoyfilters:
            await self._envoyfilter(self._managed_hosts())

    async def _route_hashes(
        self, targets: Mapping[TargetKey, ScaledTarget], scaled: Mapping[tuple[str, str], JsonObj]
    ) -> None:
        """Keep the digest of each route's metrics in the user's ScaledObject triggers naming it (rare writes:
        only when a route's metrics change, or a ScaledObject first names it)."""
        hashes: dict[str, dict[str, str]] = {}
        for key, target in targets.items():
            if target.kind == iroute.KIND:
                hashes.setdefault(key.namespace, {})[key.name] = iroute.scaling_metric_hash(target)
        if not hashes:
            return
        for (namespace, name), document in scaled.items():
            patch = scaledobjects.route_hash_patch(document, hashes.get(namespace, {}))
            if patch is None or self._is_pending(("route-hash", namespace, name), resource_version(document)):
                continue
            try:
                await self._api.patch(SCALEDOBJECTS, namespace, name, patch)
            except KubeError as exc:
                if exc.code not in (404, 409):  # gone, or edited meanwhile: the next pass sees the new one
                    log.warning("ScaledObject %s/%s: writing its routes' scalingMetricHash: %s", namespace, name, exc)
                continue
            self.writes += 1
            log.info("ScaledObject %s/%s: its routes' scaling metrics changed (scalingMetricHash)", namespace, name)
            pending = (resource_version(document), time.monotonic() + _PENDING_TTL)
            self._pending[("route-hash", namespace, name)] = pending

    def _is_pending(self, what: tuple[str, str, str], version: str) -> bool:
        """Whether this pass's write would repeat one whose result the caches do not show yet."""
        entry = self._pending.get(what)
        return entry is not None and entry[0] == version

    def _plan_scaled_object(self, work: _Work, target: ScaledTarget, uid: str, current: JsonObj | None) -> None:
        namespace, name = target.key
        version = resource_version(current) if current is not None else ""
        if self._is_pending(("scaledobject", namespace, name), version):
            work.waiting = True
            return
        wanted = scaledobjects.desired(target, uid, self.options.scaler_address)
        work.scaled_version = version
        if current is None:
            work.create = wanted
        elif not scaledobjects.owned_by(current, uid):
            work.condition = Condition(
                False,
                "ScaledObjectConflict",
                f"ScaledObject {target.key} exists and is not managed by zerohop; "
                f"remove it or annotate the HTTPScaledObject with {SKIP_SCALEDOBJECT_ANNOTATION}: 'true'",
            )
        else:
            work.patch = scaledobjects.drift(current, wanted)

    async def _writer(self, queue: asyncio.Queue[_Work | None]) -> None:
        while (work := await queue.get()) is not None:
            condition = work.condition
            if work.create is not None or work.patch is not None:
                problem = await self._write_scaled_object(work)
                if problem is not None:
                    condition = problem
            if work.status:
                await self._status(work, condition)

    async def _write_scaled_object(self, work: _Work) -> Condition | None:
        assert work.target is not None
        namespace, name = work.target.key
        try:
            if work.create is not None:
                await self._api.create(SCALEDOBJECTS, namespace, work.create)
                log.info("created ScaledObject %s", work.target.key)
            elif work.patch is not None:
                await self._api.patch(SCALEDOBJECTS, namespace, name, work.patch)
                log.info("updated ScaledObject %s", work.target.key)
        except KubeError as exc:
            if exc.code == 409 and work.create is not None:
                return None  # created by a racing writer; the next pass compares it
            log.warning("ScaledObject %s: %s", work.target.key, exc)
            return Condition(False, "CreateError", f"writing ScaledObject {work.target.key}: {exc.message or exc}")
        self.writes += 1
        self._pending[("scaledobject", namespace, name)] = (work.scaled_version, time.monotonic() + _PENDING_TTL)
        return None

    def _status_patch(self, work: _Work, condition: Condition) -> JsonObj | None:
        return scaledobjects.status_patch(
            work.document,
            condition,
            work.generation,
            work.target,
            _now(),
            work.gateway,
            workload=work.resource is HTTPSCALEDOBJECTS,
        )

    async def _status(self, work: _Work, condition: Condition) -> None:
        patch = self._status_patch(work, condition)
        if patch is None:
            return
        metadata = work.document.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        try:
            await self._api.patch(work.resource, namespace, name, patch, subresource="status")
        except KubeError as exc:
            if exc.code != 404:
                log.warning("status of %s %s/%s: %s", work.resource.kind, namespace, name, exc)
            return
        self.writes += 1
        version = resource_version(work.document)
        pending = "status" if work.resource is HTTPSCALEDOBJECTS else "route-status"
        self._pending[(pending, namespace, name)] = (version, time.monotonic() + _PENDING_TTL)

    # --- the scoped EnvoyFilter --------------------------------------------------------------------

    def _managed_hosts(self) -> list[str]:
        return sorted({h for t in self._table().targets for h in t.hosts if h != "*"})

    def warm_path_hosts(self, open_hosts: frozenset[str]) -> None:
        """The warm path is on, and these hosts are open: every EnvoyFilter written says so."""
        self._open_hosts = open_hosts

    async def set_open_hosts(self, open_hosts: frozenset[str]) -> None:
        """The warm path: write the EnvoyFilter with ext_proc off on `open_hosts` (and the probe route on every
        managed host) now, outside the pass (a sync of thousands of statuses must not delay a gate); retried
        until written."""
        self._open_hosts = open_hosts
        delay = 0.1
        while True:
            try:
                await self._envoyfilter(self._managed_hosts())
                return
            except KubeError as exc:
                log.warning("writing the EnvoyFilter for the warm path failed (retrying): %s", exc)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def current_open_hosts(self) -> frozenset[str]:
        """The managed hosts the EnvoyFilter in the API leaves open now (written by an earlier leader)."""
        options = self.options
        current = await self._api.get(ENVOYFILTERS, options.gateway_namespace, istio.ENVOYFILTER_NAME)
        return istio.open_hosts_of(current) if current is not None else frozenset()

    async def _envoyfilter(self, hosts: list[str]) -> None:
        async with self._envoyfilter_lock:
            await self._write_envoyfilter(hosts)

    async def _write_envoyfilter(self, hosts: list[str]) -> None:
        open_hosts = None if self._open_hosts is None else sorted(self._open_hosts.intersection(hosts))
        failovers = istio.failover_routes(self._table().targets, self._resolve_port)
        written = (tuple(hosts), None if open_hosts is None else tuple(open_hosts), tuple(failovers))
        if self._envoyfilter_written == written:
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
            open_hosts=open_hosts,
            failovers=failovers,
        )
        name = wanted["metadata"]["name"]
        current = await self._api.get(ENVOYFILTERS, options.gateway_namespace, name)
        if current is None:
            await self._api.create(ENVOYFILTERS, options.gateway_namespace, wanted)
        elif current.get("spec") != wanted["spec"]:
            # A replace, not a merge patch: a merge would keep labels of an old workloadSelector.
            await self._api.replace(ENVOYFILTERS, options.gateway_namespace, name, {**current, "spec": wanted["spec"]})
        else:
            self._envoyfilter_written = written
            return
        self.writes += 1
        self._envoyfilter_written = written
        opened = f", {len(open_hosts)} of them open (warm path)" if open_hosts else ""
        log.info(
            "EnvoyFilter %s/%s enables zerohop on %d host(s)%s", options.gateway_namespace, name, len(hosts), opened
        )
