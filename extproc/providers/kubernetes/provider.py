"""The Kubernetes provider: HTTPScaledObjects, InterceptorRoutes, Services and EndpointSlices from the API server.

- Routes: every valid HTTPScaledObject and InterceptorRoute (watched in all or the configured namespaces)
  becomes a target; Istio's cluster name for its Service port maps the gateway's routing choice to it.
  InterceptorRoutes are watched when their CRD is installed (checked at start, then every minute until it is).
- Readiness: a target is routable once its Service has a ready endpoint (EndpointSlices) and every gateway
  pod has loaded it: each Ready pod matching `--gateway-selector` in `--gateway-namespace` is watched and
  its Envoy stats (`POD_IP:--gateway-stats-port`) read until it reports a healthy member in the target's
  cluster. Where a pod's stats cannot be read, `--propagation-delay` after readiness stands in for it,
  and the release is watched: a released request answered by the gateway's own "no healthy upstream"
  holds new requests again, and the next release after such a failure lets one request go first.
  Outside Istio, `--envoy-admin` reads the gateways' admin API instead.
- Waking: besides KEDA's StreamIsActive push, the first cold request scales the target's scale
  subresource 0 -> max(1, replicas.min) (`scaling.scale_from_zero`: read, then write with the Scale's
  resourceVersion), so it never touches a non-zero count and never scales down. An InterceptorRoute names
  no workload: the ScaledObject whose `external-push` trigger names the route says which, and its
  minReplicaCount.
- The Lease holder writes ScaledObjects, statuses and the scoped EnvoyFilter (reconciler).
- Peers: zerohop's own Service's ready endpoints are the replicas to sum counts with.
While the API server is unreachable everything keeps running on the last known state.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from extproc.core import giveway, iroute
from extproc.core.background import BackgroundTasks
from extproc.core.engine import Core
from extproc.core.httpso import KIND as HTTPSO_KIND
from extproc.core.httpso import InvalidSpec, ScaledTarget, TargetKey
from extproc.core.provider import ReplicaCounts
from extproc.core.registry import TargetState
from extproc.core.warmpath import WarmPath
from extproc.envoy.config import istio_cluster_name, target_cluster_name
from extproc.envoy.gatewaystats import Confirmation, GatewayStats, GatewayStatsStatus
from extproc.envoy.gatewayview import GatewayView
from extproc.envoy.warmswitch import WarmSwitch
from extproc.providers.kubernetes import api as kube
from extproc.providers.kubernetes import heap
from extproc.providers.kubernetes.api import JsonObj, KubeApi, KubeError
from extproc.providers.kubernetes.endpoints import SERVICE_LABEL, ServiceEndpoints, slice_port, slice_service
from extproc.providers.kubernetes.gatewaypods import PODS, ready_gateway_pods
from extproc.providers.kubernetes.informer import Informer, InformerStatus
from extproc.providers.kubernetes.leader import LeaderElector
from extproc.providers.kubernetes.reconciler import ReconcileOptions, Reconciler
from extproc.providers.kubernetes.scaling import ScaleResult, scale_from_zero
from extproc.providers.kubernetes.subsets import SubsetTarget, subset_endpoints
from extproc.providers.kubernetes.subsetwatch import SubsetWatch
from extproc.providers.kubernetes.targets import (
    REASON_INVALID,
    Condition,
    ParseMemo,
    TargetTable,
    entry,
    service_port,
)
from extproc.providers.kubernetes.warmgateways import KubeGateways

log = logging.getLogger(__name__)

LEASE_NAME = "zerohop-leader"
PEER_PORT_NAME = "peers"
_SYNC_TIMEOUT = 30.0
# After wrong releases, the guessed delay doubles per failure, up to this many times.
_MAX_DOUBLINGS = 5
# HTTPScaledObjects (re)derived per step of the event loop: a relist of 10k objects is worked off in steps of
# a few ms, with requests served between them (`giveway`) once ready. Before, in steps of ~25 ms: the gRPC
# servers start only after the first sync, so only /healthz waits on them, and each step builds a route table
# that copies the table's indexes (at 10k targets, steps of 64 built 160 tables and took 0.3 s longer).
_CHANGES_PER_STEP = 16
_CHANGES_PER_STEP_UNTIL_READY = 512
# How often to look again for the InterceptorRoute CRD when it was not installed at start.
_ROUTE_CRD_RECHECK = 60.0
_BACKOFF_FIRST = 1.0


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    """The provider's part of Settings (`app.server.kubernetes_provider` fills it; no defaults of its own)."""

    namespaces: tuple[str, ...]
    pod_name: str
    pod_namespace: str
    pod_ip: str
    service_name: str
    scaler_port: int
    scale_on_wake: bool
    leader_election: bool
    propagation_delay: float
    envoy_admin: tuple[str, ...]
    gateway_namespace: str
    gateway_selector: str
    gateway_stats_port: int
    reconcile: ReconcileOptions | None
    # --warm-path open (Istio): the hosts' switch, how often open targets' counters are read, and the gateway
    # pods' container port their probes go to. None: every request asks zerohop.
    warm_path: WarmPath | None
    stats_interval: float
    gateway_probe_port: int


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """How zerohop learns that the gateway can route (`source`), with what that source knows."""

    source: Literal["envoy-admin", "delay", "pod-stats"]
    admin: tuple[str, ...] = ()  # envoy-admin: the admin URLs
    propagation_delay: float = 0.0  # delay: the delay after readiness
    stats: GatewayStatsStatus | None = None  # pod-stats: the pods' stats
    pod_informer: InformerStatus | None = None  # pod-stats: the watch of the gateway pods, once started
    warm_path: dict[str, Any] | None = None  # --warm-path open: the switch (leader) or who runs it

    def as_dict(self) -> dict[str, Any]:
        if self.source == "envoy-admin":
            return {"source": self.source, "admin": list(self.admin)}
        if self.source == "delay":
            return {"source": self.source, "propagationDelay": self.propagation_delay}
        document: dict[str, Any] = {"source": self.source, **(self.stats.as_dict() if self.stats else {})}
        if self.pod_informer is not None:
            document["podInformer"] = self.pod_informer.as_dict()
        if self.warm_path is not None:
            document["warmPath"] = self.warm_path
        return document


@dataclass(frozen=True, slots=True)
class KubernetesStatus:
    """The Kubernetes provider at one moment: for /status and the Kubernetes metrics."""

    identity: str
    leader: bool
    lease_holder: str | None
    informers: tuple[InformerStatus, ...]
    scale_patches: int
    gateway: GatewayStatus
    problems: tuple[dict[str, Any], ...]

    @property
    def gateway_stats(self) -> GatewayStatsStatus | None:
        return self.gateway.stats

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": "kubernetes",
            "identity": self.identity,
            "leader": self.leader,
            "leaseHolder": self.lease_holder,
            "informers": [informer.as_dict() for informer in self.informers],
            "scalePatches": self.scale_patches,
            "gateway": self.gateway.as_dict(),
            "problems": list(self.problems),
        }


class KubernetesProvider:
    """Implements the core's Provider interface against the Kubernetes API."""

    def __init__(
        self,
        api: KubeApi | Callable[[], Coroutine[Any, Any, KubeApi]],
        options: KubernetesOptions,
        on_peers: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._api_source = api
        self.api: KubeApi | None = api if isinstance(api, KubeApi) else None
        self.options = options
        self.identity = options.pod_name or socket.gethostname()
        self._on_peers = on_peers
        self._core: Core | None = None
        self.table = TargetTable()
        self._parsed = ParseMemo()
        self._endpoints = ServiceEndpoints()
        self._gateway = GatewayView(options.envoy_admin, options.propagation_delay)
        self.gateway_stats: GatewayStats | None = None
        if not options.envoy_admin and options.gateway_stats_port:
            self.gateway_stats = GatewayStats(options.gateway_stats_port, fallback_delay=options.propagation_delay)
            self.gateway_stats.on_visibility_change = self._gateway_visibility_changed
        self._gateway_pods: Informer | None = None
        self._informers: list[Informer] = []
        self._httpso_informers: list[Informer] = []
        self._route_informers: list[Informer] = []
        # InterceptorRoute -> the ScaledObjects whose trigger names it, with what they scale.
        self._route_bindings: dict[TargetKey, dict[TargetKey, iroute.Binding]] = {}
        self._routes_named: dict[TargetKey, tuple[TargetKey, ...]] = {}  # ScaledObject -> the routes it names
        self._service_informers: list[Informer] = []
        self._slice_informers: list[Informer] = []
        self._subsets: SubsetWatch | None = None
        self._so_informers: list[Informer] = []
        self._confirming: dict[TargetKey, asyncio.Future[None]] = {}
        self._tasks = BackgroundTasks()
        self._pending: set[tuple[str, str]] = set()  # HTTPScaledObjects to (re)derive
        self._pending_services: set[tuple[str, str]] = set()
        # First sync only: HTTPScaledObjects whose Service has not been listed yet, by that Service, derived
        # once it is (or once every Service is listed) rather than twice (without it, then with it).
        self._awaiting_service: dict[tuple[str, str], set[tuple[str, str]]] | None = {}
        self._applying: asyncio.Future[None] | None = None
        self._applied = asyncio.Event()
        self._applied.set()
        self.status_only_events = 0  # HTTPScaledObject updates that changed neither spec nor metadata
        self.elector: LeaderElector | None = None
        self.reconciler: Reconciler | None = None
        self.scale_patches = 0
        self.warm_switch: WarmSwitch | None = None
        self._warm_gateways: KubeGateways | None = None
        self._warm_task: asyncio.Future[None] | None = None
        # Targets changed or removed since the warm path last heard (it is told each round, see _refresh_warm_hosts).
        self._warm_changed: set[TargetKey] = set()
        self._warm_removed: set[TargetKey] = set()

    # --- Provider interface -------------------------------------------------------------------------

    async def start(self, core: Core) -> None:
        self._core = core
        if self.api is None:
            self.api = await self._api_source()  # type: ignore[operator]
        api = self.api
        scopes: Iterable[str | None] = self.options.namespaces or (None,)
        routes = await self._routes_served(api)
        self._subsets = SubsetWatch(
            api, list(scopes), self._subset_targets, self._subset_clusters, self._subset_endpoints_changed
        )
        self._informers += await self._subsets.prepare()
        reconcile = self.options.reconcile
        # ScaledObjects: the ones zerohop keeps, and (to wake a route's workload) the ones naming routes.
        watch_scaled_objects = (reconcile is not None and reconcile.manage_scaledobjects) or self.options.scale_on_wake
        for namespace in scopes:
            self._httpso_informers.append(Informer(api, kube.HTTPSCALEDOBJECTS, self._on_httpso, namespace=namespace))
            if routes:
                self._route_informers.append(self._route_informer(api, namespace))
            self._service_informers.append(Informer(api, kube.SERVICES, self._on_service, namespace=namespace))
            slices = Informer(
                api, kube.ENDPOINTSLICES, self._on_slice, namespace=namespace, label_selector=SERVICE_LABEL
            )
            self._slice_informers.append(slices)
            self._informers.append(slices)
            if watch_scaled_objects:
                self._so_informers.append(
                    Informer(api, kube.SCALEDOBJECTS, self._on_scaled_object, namespace=namespace)
                )
        if self._on_peers is not None:
            self._informers.append(
                Informer(
                    api,
                    kube.ENDPOINTSLICES,
                    self._on_own_slice,
                    namespace=self.options.pod_namespace,
                    label_selector=f"{SERVICE_LABEL}={self.options.service_name}",
                )
            )
        self._informers += self._httpso_informers + self._route_informers + self._service_informers + self._so_informers
        for informer in self._informers:
            informer.start()
        if not routes:
            self._tasks.spawn(
                self._watch_for_route_crd(api, scopes, unknown=routes is None), name="InterceptorRoute CRD check"
            )
        if self.gateway_stats is not None:
            # Not part of readiness: without the gateway pods (RBAC, a wrong selector) zerohop still serves,
            # releasing on --propagation-delay, and says so in the log and /status.
            self._gateway_pods = Informer(
                api,
                PODS,
                self._on_gateway_pod,
                namespace=self.options.gateway_namespace,
                label_selector=self.options.gateway_selector,
            )
            self._gateway_pods.start()
        # The informers list and the targets are derived inside (the tasks run while this waits).
        with heap.first_sync():
            try:
                await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self._informers)), _SYNC_TIMEOUT)
            except TimeoutError:
                unsynced = [i.name for i in self._informers if not i.synced.is_set()]
                log.error(
                    "not synced with the API server after %.0fs (%s); continuing, readiness stays down",
                    _SYNC_TIMEOUT,
                    unsynced,
                )
            self._stop_awaiting_services()
            await self._applied.wait()
        if self.options.warm_path is not None and self.gateway_stats is not None:
            self._warm_gateways = KubeGateways(
                self._write_open_hosts,
                self.gateway_stats,
                self.options.gateway_probe_port,
                self.options.propagation_delay,
            )
            self.warm_switch = WarmSwitch(
                core,
                self.options.warm_path,
                self._warm_gateways,
                self.options.stats_interval,
                refresh=self._refresh_warm_hosts,
                cluster_of=self._counted_cluster,
            )
        if self.options.reconcile is not None:
            self.reconciler = Reconciler(
                api,
                self.options.reconcile,
                lambda: self.table,
                self._httpsos,
                self._scaled_objects,
                self.gateway_condition,
                routes=self._routes,
                resolve_port=self._service_port,
            )
            if self.options.leader_election:
                self.elector = LeaderElector(api, self.options.pod_namespace, LEASE_NAME, self.identity, self._leading)
                self.elector.start()
            else:
                self._leading(True)

    def ready(self) -> bool:
        return all(informer.synced.is_set() for informer in self._informers)

    def wake(self, key: TargetKey) -> None:
        if not self.options.scale_on_wake or self.api is None:
            return
        target = self.table.by_key.get(key)
        if target is not None and target.kind == iroute.KIND:
            target = self._bound(target)
        if target is not None:
            self._tasks.spawn(self._scale_from_zero(target), name=f"scale from zero {key}")

    def _bound(self, route: ScaledTarget) -> ScaledTarget | None:
        """A route with the workload of the ScaledObject naming it (the first by name when several do)."""
        named = self._route_bindings.get(route.key)
        if not named:
            log.debug("%s: no ScaledObject names this InterceptorRoute; KEDA activates it, if anything", route.key)
            return None
        return iroute.bind(route, named[min(named)])

    def reconfirm(self, key: TargetKey) -> None:
        if self._core is not None:
            self._update_routable(key)

    def replicas(self, key: TargetKey) -> ReplicaCounts | None:
        service = self.table.services.get(key)
        if service is None:
            return None
        pods = self._subsets.pods(key) if self._subsets is not None else None
        if pods is not None:
            ready, total = subset_endpoints(self._slice_documents(service), pods)
            return ReplicaCounts(total, len(ready))
        return ReplicaCounts(self._endpoints.total(service), len(self._endpoints.ready(service)))

    async def stop(self) -> None:
        if self.elector is not None:
            await self.elector.stop()
        if self.reconciler is not None:
            await self.reconciler.stop()
        await self._tasks.close()
        if self._subsets is not None:
            await self._subsets.stop()
        if self._warm_gateways is not None:
            await self._warm_gateways.close()
        # Route informers started late join `_informers` once synced; stop those that had not yet too.
        for informer in [*self._informers, *(i for i in self._route_informers if i not in self._informers)]:
            await informer.stop()
        if self._gateway_pods is not None:
            await self._gateway_pods.stop()
        await self._gateway.close()
        if self.gateway_stats is not None:
            await self.gateway_stats.close()
        if self.api is not None and not isinstance(self._api_source, KubeApi):
            await self.api.close()

    def status(self) -> KubernetesStatus:
        return KubernetesStatus(
            identity=self.identity,
            leader=self.elector.leading if self.elector is not None else self.reconciler is not None,
            lease_holder=self.elector.holder if self.elector is not None else None,
            informers=tuple(informer.status() for informer in [*self._informers, *self._subset_informers()]),
            scale_patches=self.scale_patches,
            gateway=self.gateway_status(),
            problems=tuple(self.problems()),
        )

    def problems(self) -> list[dict[str, Any]]:
        """HTTPScaledObjects left out as invalid, in /status's configuration-problems shape."""
        # Filtered before sorting: every /metrics scrape and /status fetch asks, and sorting 10,000 valid keys
        # stalled the loop for tens of milliseconds.
        invalid = [(key, c) for key, c in self.table.conditions.items() if c.reason == REASON_INVALID]
        return [
            {
                "file": None,
                "document": None,
                "kind": self.table.entries[key].kind,
                "name": str(key),
                "message": condition.message,
                "severity": "error",
                "since": None,
            }
            for key, condition in sorted(invalid)
        ]

    def gateway_status(self) -> GatewayStatus:
        """How zerohop learns that the gateway can route: from which pods' stats, or by a delay."""
        if self.options.envoy_admin:
            return GatewayStatus("envoy-admin", admin=self.options.envoy_admin)
        if self.gateway_stats is None:
            return GatewayStatus("delay", propagation_delay=self.options.propagation_delay)
        pod_informer = self._gateway_pods.status() if self._gateway_pods is not None else None
        warm: dict[str, Any] | None = None
        if self.warm_switch is not None:
            running = self._warm_task is not None and not self._warm_task.done()
            warm = self.warm_switch.status() if running else {"runBy": "leader", "leader": False}
            if running and self._warm_gateways is not None:
                warm["unconfirmableHosts"] = self._warm_gateways.unconfirmable()
        return GatewayStatus("pod-stats", stats=self.gateway_stats.status(), pod_informer=pod_informer, warm_path=warm)

    def gateway_condition(self) -> Condition:
        """The HTTPScaledObjects' GatewayVisible condition: can zerohop see when the gateway can route?"""
        delay = f"{self.options.propagation_delay:g}s"
        if self.options.envoy_admin:
            return Condition(True, "EnvoyAdmin", "routability read from the gateways' Envoy admin API")
        if self.gateway_stats is None:
            message = f"--gateway-stats-port is 0: held requests are released {delay} after the endpoint is ready"
            return Condition(False, "StatsDisabled", message)
        if not self.gateway_stats.pods:
            message = (
                f"no Ready pod matches {self.options.gateway_selector} in {self.options.gateway_namespace} "
                f"(or zerohop may not list pods there); releasing {delay} after the endpoint is ready"
            )
            return Condition(False, "NoGatewayPods", message)
        blind = self.gateway_stats.blind_pods()
        if blind:
            message = (
                f"cannot read the Envoy stats of gateway pod(s) {', '.join(sorted(blind))} on port "
                f"{self.options.gateway_stats_port} (stats inclusion or NetworkPolicy, see docs/istio.md); "
                f"releasing {delay} after the endpoint is ready for them"
            )
            return Condition(False, "GatewayStatsUnavailable", message)
        pods = len(self.gateway_stats.pods)
        return Condition(True, "GatewayStats", f"routability read from {pods} gateway pod(s)' Envoy stats")

    # --- caches -> core ---------------------------------------------------------------------------

    def _merged(self, informers: list[Informer]) -> dict[tuple[str, str], JsonObj]:
        merged: dict[tuple[str, str], JsonObj] = {}
        for informer in informers:
            merged.update(informer.cache)
        return merged

    def _httpsos(self) -> dict[tuple[str, str], JsonObj]:
        return self._merged(self._httpso_informers)

    def _scaled_objects(self) -> dict[tuple[str, str], JsonObj]:
        return self._merged(self._so_informers)

    def _routes(self) -> dict[tuple[str, str], JsonObj]:
        return self._merged(self._route_informers)

    def _route_informer(self, api: KubeApi, namespace: str | None) -> Informer:
        # Same handler as HTTPScaledObjects: the two kinds share names, `_document` picks which one serves.
        return Informer(api, kube.INTERCEPTORROUTES, self._on_httpso, namespace=namespace)

    async def _routes_served(self, api: KubeApi) -> bool | None:
        """Whether the InterceptorRoute CRD is installed; None when the API server could not say."""
        try:
            served = await api.served(kube.INTERCEPTORROUTES)
        except KubeError as exc:
            log.warning("cannot tell yet whether InterceptorRoutes are served (%s); asking again shortly", exc)
            return None
        if not served:
            log.info(
                "the InterceptorRoute CRD (http.keda.sh/v1beta1) is not installed: serving HTTPScaledObjects "
                "only, and looking for it again every %.0fs",
                _ROUTE_CRD_RECHECK,
            )
        return served

    async def _watch_for_route_crd(self, api: KubeApi, scopes: Iterable[str | None], unknown: bool) -> None:
        """Start watching InterceptorRoutes once their CRD is installed (asked again every minute; sooner while
        the API server could not answer); they join readiness once synced."""
        delay = _ROUTE_CRD_RECHECK if not unknown else _BACKOFF_FIRST
        while True:
            await asyncio.sleep(delay)
            try:
                if not await api.served(kube.INTERCEPTORROUTES):
                    delay = _ROUTE_CRD_RECHECK
                    continue
            except KubeError:
                delay = min(_ROUTE_CRD_RECHECK, delay * 2)
                continue
            informers = [self._route_informer(api, namespace) for namespace in scopes]
            for informer in informers:
                informer.start()
            self._route_informers += informers
            await asyncio.gather(*(informer.synced.wait() for informer in informers))
            self._informers += informers
            log.info("InterceptorRoutes are served: watching them")
            return

    def _on_httpso(self, _kind: str, old: JsonObj | None, new: JsonObj | None) -> None:
        if old is not None and new is not None and _same_spec_and_metadata(old, new):
            # A status write (zerohop's own, on every replica): nothing routing or the targets read changed.
            self.status_only_events += 1
            if self.reconciler is not None:
                self.reconciler.trigger()
            return
        self._pending.add(kube.object_key(new or old or {}))
        self._schedule()

    def _on_service(self, _kind: str, old: JsonObj | None, new: JsonObj | None) -> None:
        if old is not None and new is not None and _ports(old) == _ports(new):
            return  # only a Service's existence and ports reach the targets
        self._pending_services.add(kube.object_key(new or old or {}))
        self._schedule()

    def _schedule(self) -> None:
        self._applied.clear()
        if self._applying is None:
            self._applying = self._tasks.spawn(self._apply_pending(), name="apply HTTPScaledObject changes")

    def _on_scaled_object(self, _kind: str, old: JsonObj | None, new: JsonObj | None) -> None:
        # Which routes a ScaledObject names (the workload to wake for each): replaced on every change.
        own = TargetKey(*kube.object_key(new or old or {}))
        for route in self._routes_named.pop(own, ()):
            named = self._route_bindings.get(route, {})
            named.pop(own, None)
            if not named:
                self._route_bindings.pop(route, None)
        bindings: list[iroute.Binding] = []
        if new is not None:
            try:
                bindings = iroute.bindings(new)
            except InvalidSpec as exc:
                log.debug("ScaledObject %s: %s", own, exc)
        for binding in bindings:
            self._route_bindings.setdefault(binding.route, {})[own] = binding
        if bindings:
            self._routes_named[own] = tuple(b.route for b in bindings)
        if self._subsets is not None:
            self._subsets.refresh()  # a route's workload, whose pods may make a subset, comes from here
        if self.reconciler is not None:
            self.reconciler.trigger()

    async def _apply_pending(self) -> None:
        # Many events arrive together (a relist, a kubectl apply of several objects): they are worked off a
        # bounded number per loop step, each step publishing one route table derived from the last.
        try:
            while self._pending or self._pending_services:
                ready = self.ready()
                try:
                    self._apply_some(_CHANGES_PER_STEP if ready else _CHANGES_PER_STEP_UNTIL_READY)
                except Exception:
                    log.exception("applying HTTPScaledObject changes failed")
                await (giveway.give_way() if ready else asyncio.sleep(0))
        finally:
            self._applying = None
            self._applied.set()

    def _apply_some(self, limit: int) -> None:
        assert self._core is not None
        if self._awaiting_service is not None and all(i.synced.is_set() for i in self._service_informers):
            self._stop_awaiting_services()
        keys: set[tuple[str, str]] = set()
        while self._pending_services and len(keys) < limit:
            # Every valid HTTPScaledObject is indexed by the Service it names, found or not.
            service = self._pending_services.pop()
            keys.update(self.table.for_service(service))
            if self._awaiting_service:
                keys.update(self._awaiting_service.pop(service, ()))
        while self._pending and len(keys) < limit:
            keys.add(self._pending.pop())
        changed: list[ScaledTarget] = []
        removed: list[TargetKey] = []
        clusters: dict[str, TargetKey | None] = {}
        for namespace, name in keys:
            key = TargetKey(namespace, name)
            document, kind = self._document((namespace, name))
            for other in (HTTPSO_KIND, iroute.KIND):
                if document is None or other != kind:
                    self._parsed.forget(other, (namespace, name))
            if document is not None and self._awaits_service(document, kind, (namespace, name)):
                continue
            derived = entry(document, self._service, kind, memo=self._parsed) if document is not None else None
            clusters.update(self.table.set(key, derived))
            if derived is None or derived.target is None:
                removed.append(key)
            else:
                changed.append(derived.target)
        self._core.update_targets(changed, removed, clusters)
        if self.options.warm_path is not None:
            self._warm_changed.update(target.key for target in changed)
            self._warm_removed.update(removed)
        for target in changed:
            self._update_routable(target.key)
        if self._subsets is not None:
            self._subsets.refresh()
        if self.reconciler is not None:
            self.reconciler.trigger()

    def _awaits_service(self, document: JsonObj, kind: str, key: tuple[str, str]) -> bool:
        """In the first sync, whether `document` waits for its Service to be listed (it is then kept by it)."""
        if self._awaiting_service is None:
            return False
        try:
            target = self._parsed.parse(document, kind)
        except InvalidSpec:
            return False  # derived at once: its condition says why
        service = (key[0], target.scale_target.service)
        if self._service(service) is not None:
            return False
        self._awaiting_service.setdefault(service, set()).add(key)
        return True

    def _stop_awaiting_services(self) -> None:
        """Every Service is listed (or the first sync is over): what still waits is derived as it is."""
        if self._awaiting_service is None:
            return
        for keys in self._awaiting_service.values():
            self._pending.update(keys)
        self._awaiting_service = None
        if self._pending:
            self._schedule()

    def _document(self, key: tuple[str, str]) -> tuple[JsonObj | None, str]:
        """The object that serves `key`: its HTTPScaledObject, else its InterceptorRoute (they share names)."""
        for informers, kind in ((self._httpso_informers, HTTPSO_KIND), (self._route_informers, iroute.KIND)):
            for informer in informers:
                document = informer.cache.get(key)
                if document is not None:
                    return document, kind
        return None, HTTPSO_KIND

    def _service_port(self, namespace: str, service: str, port_name: str) -> int | None:
        """The number of a Service's named port, from the Service cache (a fallback's `portName`)."""
        found = self._service((namespace, service))
        return None if found is None else service_port(found, port_name)

    def _service(self, key: tuple[str, str]) -> JsonObj | None:
        for informer in self._service_informers:
            document = informer.cache.get(key)
            if document is not None:
                return document
        return None

    def _on_slice(self, _kind: str, old: JsonObj | None, new: JsonObj | None) -> None:
        changed = self._endpoints.update(old, new)
        if self._subsets is not None and self._subsets.index.owners:
            # A Service's ready addresses can stay the same while which pods are ready, so which subsets are,
            # changes (a pod's address taken over by another, or one address for many pods).
            subset_services = self._subsets.index.services
            changed.update(s for s in (slice_service(d) for d in (old, new) if d) if s in subset_services)
        for service in changed:
            for key in self.table.for_service(service):
                self._update_routable(key)

    def _gateway_visibility_changed(self) -> None:
        if self.reconciler is not None:
            self.reconciler.trigger()

    def _on_gateway_pod(self, _kind: str, _old: JsonObj | None, _new: JsonObj | None) -> None:
        if self.gateway_stats is None or self._gateway_pods is None:
            return
        before = self.gateway_condition()
        self.gateway_stats.set_pods(ready_gateway_pods(self._gateway_pods.cache.values()))
        if self.reconciler is not None and self.gateway_condition() != before:
            self.reconciler.trigger()

    # --- DestinationRule subsets (subsetwatch.py) ---------------------------------------------------------

    def _subset_targets(self, service: tuple[str, str]) -> list[SubsetTarget]:
        """The targets naming `service`, with the workload whose pod template decides their subsets."""
        found = []
        for key in self.table.for_service(service):
            target, port = self.table.by_key.get(key), self.table.ports.get(key)
            if target is None or port is None:
                continue
            bound = self._bound(target) if target.kind == iroute.KIND else target
            ref = bound.scale_target if bound is not None else None
            resource = _WORKLOADS.get((ref.api_version, ref.kind)) if ref is not None else None
            workload = (resource.plural, key.namespace, ref.name) if resource and ref and ref.name else None
            found.append(SubsetTarget(key, service, port, workload))
        return found

    def _subset_clusters(self, changed: dict[str, TargetKey | None]) -> None:
        if self._core is not None:
            self._core.update_targets((), (), changed)

    def _subset_endpoints_changed(self, keys: set[TargetKey]) -> None:
        if self._core is None:
            return
        for key in keys:
            if key in self.table.by_key:
                self._update_routable(key)

    def _counted_cluster(self, state: TargetState) -> str:
        """The cluster whose gateway counters are `state`'s requests on the open warm path: its subset's
        cluster when it owns one (the first when several), else its Service's."""
        owned = self._subsets.clusters(state.key) if self._subsets is not None else []
        return owned[0] if owned else target_cluster_name(state.spec)

    def _subset_informers(self) -> list[Informer]:
        """The watches subsets started on their own (a canary's workloads and subset pods; DestinationRules
        found after start), which readiness does not wait for."""
        if self._subsets is None:
            return []
        return [i for i in self._subsets.informers() if i not in self._informers]

    def _slice_documents(self, service: tuple[str, str]) -> list[JsonObj]:
        documents = []
        for slice_key in self._endpoints.slices(service):
            for informer in self._slice_informers:
                document = informer.cache.get(slice_key)
                if document is not None:
                    documents.append(document)
                    break
        return documents

    def _ready(self, key: TargetKey) -> set[str]:
        """The ready addresses of `key`: its Service's, or, for a target owning DestinationRule subsets, those
        of the Pods in its subsets only."""
        service = self.table.services.get(key)
        if service is None:
            return set()
        pods = self._subsets.pods(key) if self._subsets is not None else None
        if pods is None:
            return self._endpoints.ready(service)
        return subset_endpoints(self._slice_documents(service), pods)[0]

    def _update_routable(self, key: TargetKey) -> None:
        assert self._core is not None
        ready = self._ready(key)
        gate = self._core.cold_gate.for_target(key)
        pending = self._confirming.get(key)
        if not ready:
            if pending is not None:
                pending.cancel()
                self._confirming.pop(key, None)
            self._core.set_routable(key, False)
        elif not gate.routable and pending is None:
            self._confirming[key] = self._tasks.spawn(self._confirm(key, ready), name=f"confirm {key}")

    async def _confirm(self, key: TargetKey, addresses: set[str]) -> None:
        """The gateway can route once every gateway pod has loaded a ready endpoint; where that cannot be
        seen, once the propagation delay (doubled per wrong release) has passed."""
        try:
            port = self.table.ports.get(key)
            target_service = self.table.services.get(key)
            assert self._core is not None
            failures = self._core.cold_gate.for_target(key).failed_guesses
            delay = self.options.propagation_delay * 2 ** min(failures, _MAX_DOUBLINGS)
            if target_service is None or port is None:
                await asyncio.sleep(delay)
                guessed = True
            else:
                # A target owning subsets is routed to through their clusters (each holds only its pods).
                subset_clusters = self._subsets.clusters(key) if self._subsets is not None else []
                guessed = False
                for cluster in subset_clusters or [istio_cluster_name(target_service[1], key.namespace, port)]:
                    if self._gateway.exact:
                        await self._gateway.wait_any(cluster, addresses)
                    elif self.gateway_stats is not None:
                        confirmed = await self.gateway_stats.wait_routable(cluster, delay)
                        guessed = guessed or confirmed is not Confirmation.STATS
                    else:
                        await asyncio.sleep(delay)
                        guessed = True
            if target_service is not None and self._ready(key):
                self._core.set_routable(key, True, guessed=guessed)
        finally:
            self._confirming.pop(key, None)

    def _on_own_slice(self, _kind: str, _old: JsonObj | None, _new: JsonObj | None) -> None:
        if self._on_peers is None:
            return
        peers: set[str] = set()
        for informer in self._informers:
            if informer.label_selector != f"{SERVICE_LABEL}={self.options.service_name}":
                continue
            for endpoint_slice in informer.cache.values():
                port = slice_port(endpoint_slice, PEER_PORT_NAME)
                if port is None:
                    continue
                for endpoint in endpoint_slice.get("endpoints") or []:
                    if (endpoint.get("conditions") or {}).get("ready") is False:
                        continue
                    for address in endpoint.get("addresses") or []:
                        if address != self.options.pod_ip:
                            peers.add(f"{address}:{port}")
        self._on_peers(sorted(peers))

    # --- leading and waking -----------------------------------------------------------------------

    def _leading(self, leading: bool) -> None:
        if self.reconciler is None:
            return
        if self.warm_switch is None:
            if leading:
                self.reconciler.start()
            else:
                self._tasks.spawn(self.reconciler.stop(), name="reconciler stop", cancel_on_close=False)
            return
        if leading:
            self._warm_task = self._tasks.spawn(self._lead_with_warm_path(), name="warm path")
        else:
            if self._warm_task is not None:
                self._warm_task.cancel()
                self._warm_task = None
            # The new leader decides now, and its targets' IsActive travels to this replica through the peers.
            self.warm_switch.warm.forget_all()
            self.warm_switch.written = frozenset()
            self._tasks.spawn(self.reconciler.stop(), name="reconciler stop", cancel_on_close=False)

    async def _lead_with_warm_path(self) -> None:
        """Take over the warm path, then run it. The EnvoyFilter may leave hosts open (an earlier leader):
        those count as open, and are written as they are, until this leader has read their counters and
        confirmed a gate; only then does the reconciler's first pass run."""
        assert self.reconciler is not None
        assert self.warm_switch is not None
        delay = 0.1
        while True:
            try:
                already_open = await self.reconciler.current_open_hosts()
                break
            except KubeError as exc:
                log.warning("warm path: cannot read the EnvoyFilter (retrying): %s", exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        if already_open:
            log.info("warm path: %d host(s) left open by an earlier leader; reading their counters", len(already_open))
        self.warm_switch.assume_written(already_open)
        self.reconciler.warm_path_hosts(already_open)
        self.reconciler.start()
        await self.warm_switch.run()

    async def _write_open_hosts(self, open_hosts: frozenset[str]) -> None:
        assert self.reconciler is not None
        await self.reconciler.set_open_hosts(open_hosts)

    def _refresh_warm_hosts(self) -> None:
        """Hand the warm path the targets changed since the last round (what changed only: at 10,000 targets
        a whole pass would stall requests)."""
        if not (self._warm_changed or self._warm_removed) or self._core is None or self.warm_switch is None:
            return
        changed = []
        for key in self._warm_changed:
            state = self._core.registry.get(key)
            target = self.table.by_key.get(key)
            if state is not None and target is not None:
                changed.append((state, tuple(h for h in target.hosts if h != "*")))
        self.warm_switch.warm.apply(changed, self._warm_removed - self._warm_changed)
        self._warm_changed, self._warm_removed = set(), set()

    async def _scale_from_zero(self, target: ScaledTarget) -> None:
        assert self.api is not None
        ref = target.scale_target
        resource = {("apps/v1", "Deployment"): kube.DEPLOYMENTS, ("apps/v1", "StatefulSet"): kube.STATEFULSETS}.get(
            (ref.api_version, ref.kind)
        )
        if resource is None:
            log.debug("%s: no direct scale for %s %s; KEDA activates it", target.key, ref.api_version, ref.kind)
            return
        result = await scale_from_zero(self.api, resource, target.key.namespace, ref.name, target.activation_replicas)
        if result is not ScaleResult.SCALED:
            return  # left alone (KEDA, the HPA or another replica got there first), or logged as failed
        self.scale_patches += 1
        log.info("%s: scaled %s/%s 0 -> %d", target.key, ref.kind, ref.name, target.activation_replicas)


_WORKLOADS = {("apps/v1", "Deployment"): kube.DEPLOYMENTS, ("apps/v1", "StatefulSet"): kube.STATEFULSETS}


def _same_spec_and_metadata(old: JsonObj, new: JsonObj) -> bool:
    """True for an update that changed only the status: the API server bumps `metadata.generation` on every
    spec change of a custom resource with a status subresource (never on status or metadata changes), and
    the labels, annotations and uid the targets copy are compared as they are."""
    before = old.get("metadata") or {}
    after = new.get("metadata") or {}
    generation = after.get("generation")
    return (
        bool(generation)
        and generation == before.get("generation")
        and all(before.get(field) == after.get(field) for field in ("labels", "annotations", "uid"))
    )


def _ports(service: JsonObj) -> Any:
    return (service.get("spec") or {}).get("ports")
