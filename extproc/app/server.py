"""Wires the core, the servicers, the provider and the admin server into one process, and runs it.

Shutdown (SIGTERM/SIGINT, or `stop()`): readiness turns 503, every held request is answered (CONTINUE if
its target is routable, else 503 with Retry-After), the ext_proc server stops taking streams and waits at
most `drain_timeout` for open ones, then the provider stops its replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc

from extproc._proto import peers_pb2_grpc as peers_grpc
from extproc.app.settings import ProviderKind, Settings, SettingsError, resolve_warm_path
from extproc.core.background import BackgroundTasks
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.core.provider import Provider
from extproc.core.warmpath import WarmPath, WarmPathMode
from extproc.envoy import istio
from extproc.envoy.processor import ExtProcServicer
from extproc.keda.autoscaler import LocalAutoscaler
from extproc.keda.peers import Peers, PeerServicer
from extproc.keda.scaler import CountSource, LocalCounts, ScalerServicer
from extproc.observability import metrics
from extproc.observability.admin import AdminServer, StatusView
from extproc.observability.history import History
from extproc.observability.pacing import Pacer
from extproc.observability.telemetry import Telemetry
from extproc.providers.kubernetes import api as kube
from extproc.providers.kubernetes.api import KubeApi
from extproc.providers.kubernetes.provider import KubernetesOptions, KubernetesProvider
from extproc.providers.kubernetes.reconciler import ReconcileOptions
from extproc.providers.local import config as local_config
from extproc.providers.local.provider import LocalProvider

log = logging.getLogger(__name__)

# An unanswered keepalive ping closes the connection after this long.
KEEPALIVE_TIMEOUT = 20.0


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel options of zerohop's gRPC servers.

    Per connection, streams are not limited by HTTP/2 (held requests are open streams; Envoy multiplexes
    them on few connections): the whole server's limit is `maximum_concurrent_rpcs` (`grpc_server`).
    """
    return [
        ("grpc.max_concurrent_streams", 1_000_000),
        ("grpc.keepalive_time_ms", int(settings.grpc_keepalive * 1000)),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        # gRPC sets SO_REUSEPORT by default: a second zerohop on the same port (or two of zerohop's servers on
        # one address) would start and split the connections between them. Without it, the second bind fails.
        ("grpc.so_reuseport", 0),
    ]


def grpc_server(settings: Settings, maximum_concurrent_rpcs: int | None = None) -> grpc.aio.Server:
    """A grpc.aio server; beyond `maximum_concurrent_rpcs` open calls, a new call is answered
    RESOURCE_EXHAUSTED at once instead of waiting for a slot (grpc.aio checks the count before it accepts
    each next call, so the answer comes as fast as the event loop turns)."""
    return grpc.aio.server(options=grpc_options(settings), maximum_concurrent_rpcs=maximum_concurrent_rpcs)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _warm_path(settings: Settings) -> WarmPath | None:
    """The provider's warm path: with --warm-path open (or auto resolved to it), else None."""
    mode, why_not_open = resolve_warm_path(settings)
    if why_not_open is not None:
        log.info("--warm-path auto: every request asks zerohop (ext-proc), because %s", why_not_open)
    else:
        log.info("warm path: %s", mode.value)
    return WarmPath(settings.open_after) if mode is WarmPathMode.OPEN else None


def local_provider(settings: Settings) -> LocalProvider:
    if settings.config is None:
        raise SettingsError("--config (ZEROHOP_CONFIG) is required with --provider local")
    # Read it before anything listens or starts: a missing or broken file is then the only thing reported.
    local_config.load(settings.config)
    return LocalProvider(
        settings.config,
        state_dir=settings.state_dir,
        xds_dir=settings.xds_dir,
        envoy_admin=settings.envoy_admin,
        eds_settle_delay=settings.eds_settle_delay,
        drain_timeout=settings.drain_timeout,
        autoscaled=settings.autoscale,
        warm_path=_warm_path(settings),
        stats_interval=settings.stats_interval,
    )


def kubernetes_provider(settings: Settings, peers: Peers, api: KubeApi | None = None) -> KubernetesProvider:
    try:
        selector = istio.parse_selector(settings.gateway_selector)
    except ValueError as exc:
        raise SettingsError(f"--gateway-selector: {exc}") from None
    scaler_port = _split(settings.scaler_address)[1]
    reconcile = ReconcileOptions(
        scaler_address=f"{settings.service_name}.{settings.pod_namespace}.svc.cluster.local:{scaler_port}",
        manage_scaledobjects=settings.manage_scaledobjects,
        manage_envoyfilters=settings.manage_envoyfilters,
        zerohop_namespace=settings.pod_namespace,
        service_name=settings.service_name,
        hold_timeout=settings.hold_timeout,
        gateway_namespace=settings.gateway_namespace,
        gateway_selector=selector,
        gateway_ports=settings.gateway_ports,
    )
    options = KubernetesOptions(
        namespaces=settings.namespaces,
        pod_name=settings.pod_name,
        pod_namespace=settings.pod_namespace,
        pod_ip=settings.pod_ip,
        service_name=settings.service_name,
        scaler_port=scaler_port,
        scale_on_wake=settings.scale_on_wake,
        leader_election=settings.leader_election,
        propagation_delay=settings.propagation_delay,
        envoy_admin=settings.envoy_admin,
        gateway_namespace=settings.gateway_namespace,
        gateway_selector=settings.gateway_selector,
        gateway_stats_port=settings.gateway_stats_port,
        reconcile=reconcile,
        warm_path=_warm_path(settings),
        stats_interval=settings.stats_interval,
        gateway_probe_port=settings.gateway_probe_port,
    )
    source: KubeApi | Callable[[], Coroutine[Any, Any, KubeApi]] = api or (
        lambda: kube.connect(settings.kubeconfig, qps=settings.kube_api_qps, burst=settings.kube_api_burst)
    )
    return KubernetesProvider(source, options, on_peers=peers.set_peers)


class ZerohopServer:
    """One zerohop process. `await start()`, then `await wait()` or `await stop()`."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider | None = None,
        kube_api: KubeApi | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.core = Core(
            hold_timeout=settings.hold_timeout,
            max_held_per_target=settings.max_held_per_target,
            max_held_total=settings.max_held_total,
            rewake_interval=settings.rewake_interval,
            in_flight=settings.in_flight,
            release_watch=settings.release_watch,
        )
        self.peers: Peers | None = None
        if provider is None and settings.provider is ProviderKind.KUBERNETES:
            replica = settings.pod_name or socket.gethostname()
            self.peers = Peers(
                replica, self.core.bus, timeout=settings.peer_timeout, stale_after=settings.peer_stale_after
            )
            provider = kubernetes_provider(settings, self.peers, kube_api)
        self.provider: Provider = provider or local_provider(settings)
        self.core.add_provider(self.provider)
        observer = warm = None
        if telemetry is not None:
            observer = telemetry.hold_observer(self._ready_replicas)
            warm = telemetry.warm_observer() if settings.trace_warm_requests else None
            self.core.cold_gate.add_wake_hook(telemetry.activation_hook(self._activation_details))
        self.processor = ExtProcServicer(
            self.core.router,
            self.core.cold_gate,
            retry_after=settings.retry_after,
            observer=observer,
            warm_observer=warm,
        )
        counts: CountSource = self.peers if self.peers is not None else LocalCounts()
        self.scaler = ScalerServicer(self.core.router, self.core.bus, counts)
        peers = self.peers
        self.status_view = StatusView(
            self.core,
            self.provider,
            self.processor.stats,
            self.scaler.calls,
            None if peers is None else lambda: {"peers": peers.status().as_dict()},
            None if peers is None else peers.known_totals,
        )
        self.history = (
            History(self.core, self.provider, max_bytes=settings.history_max_mib * 2**20)
            if settings.history_max_mib
            else None
        )
        self.admin = AdminServer(self.status_view, self.ready, self.metrics_chunks, self.history)
        self.autoscaler: LocalAutoscaler | None = None
        self._ext_proc_server: grpc.aio.Server | None = None
        self._scaler_server: grpc.aio.Server | None = None
        self._peer_server: grpc.aio.Server | None = None
        self._started = False
        self._stopped = asyncio.Event()
        # Only the stop a signal requests runs here; a failing stop is then logged rather than kept in the task.
        self._background = BackgroundTasks()
        self._stopping: asyncio.Future[None] | None = None
        self._sampling: asyncio.Future[None] | None = None
        self.ext_proc_port = 0
        self.scaler_port = 0
        self.admin_port = 0
        self.peer_port = 0

    def status(self) -> dict[str, Any]:
        return self.status_view.document()

    def _ready_replicas(self, key: TargetKey) -> int | None:
        counts = self.provider.replicas(key)
        return None if counts is None else counts.ready

    def _activation_details(self, key: TargetKey) -> dict[str, Any]:
        return {
            "zerohop.keda_streams": self.core.bus.subscribers(key),
            "zerohop.peers_told": len(self.peers.addresses) if self.peers is not None else 0,
            "zerohop.scale_patch": self.settings.provider is ProviderKind.KUBERNETES and self.settings.scale_on_wake,
        }

    def _metrics_sources(self) -> metrics.Sources:
        return metrics.Sources(self.core, self.provider, self.processor.stats, self.scaler.calls, self.peers)

    def metrics_families(self) -> list[metrics.Family]:
        return metrics.collect(self._metrics_sources(), self.settings.metrics_max_targets)

    def metrics_chunks(self, pacer: Pacer) -> AsyncIterator[bytes]:
        return metrics.scrape(self._metrics_sources(), self.settings.metrics_max_targets, pacer)

    def ready(self) -> bool:
        return self._started and not self.core.cold_gate.draining and self.provider.ready()

    async def start(self) -> None:
        settings = self.settings
        admin_host, admin_port = _split(settings.admin_address)
        try:
            self.admin_port = await self.admin.start(admin_host, admin_port)
        except OSError as exc:
            raise SettingsError(f"--admin-address: cannot listen on {settings.admin_address}: {exc.strerror}") from None
        await self.provider.start(self.core)

        self._ext_proc_server = grpc_server(settings, settings.ext_proc_max_streams)
        self._ext_proc_server.add_generic_rpc_handlers((self.processor.rpc_handler(),))
        self.ext_proc_port = self._bind(self._ext_proc_server, settings.ext_proc_address, "--ext-proc-address")
        self._scaler_server = grpc_server(settings)
        self._scaler_server.add_generic_rpc_handlers((self.scaler.rpc_handler(),))
        self.scaler_port = self._bind(self._scaler_server, settings.scaler_address, "--scaler-address")
        await self._ext_proc_server.start()
        await self._scaler_server.start()
        if self.peers is not None:
            self._peer_server = grpc_server(settings)
            peers_grpc.add_PeersServicer_to_server(
                PeerServicer(self.peers.replica, self.core.registry, self.core.bus), self._peer_server
            )
            self.peer_port = self._bind(self._peer_server, settings.peer_address, "--peer-address")
            await self._peer_server.start()
            self.peers.start()

        if settings.autoscale and isinstance(self.provider, LocalProvider):
            scaler_host = _split(settings.scaler_address)[0]
            if scaler_host in ("0.0.0.0", "::", "[::]", ""):
                scaler_host = "127.0.0.1"
            self.autoscaler = LocalAutoscaler(
                f"{scaler_host}:{self.scaler_port}", self.provider, settings.polling_interval
            )
            await self.autoscaler.start()
        if self.telemetry is not None:
            self.telemetry.observe(self.metrics_families)
        if self.history is not None:
            self._sampling = self._background.spawn(self.history.run(), name="status history")
        self._started = True
        log.info(
            "zerohop ready: ext_proc :%d, scaler :%d, admin :%d, %d target(s)",
            self.ext_proc_port,
            self.scaler_port,
            self.admin_port,
            len(self.core.registry),
        )

    @staticmethod
    def _bind(server: grpc.aio.Server, address: str, flag: str) -> int:
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise SettingsError(f"{flag}: cannot listen on {address}: {exc}") from None
        if port == 0:
            raise SettingsError(f"{flag}: cannot listen on {address} (in use?)")
        return port

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)

    def request_stop(self, reason: str = "stop requested") -> None:
        if self._stopping is None:
            log.info("%s: draining", reason)
            self._stopping = self._background.spawn(self.stop(), name="drain and stop")

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Drain and stop; safe to call more than once."""
        if self._stopped.is_set():
            return
        if self.autoscaler is not None:
            await self.autoscaler.stop()
        if self._sampling is not None:
            self._sampling.cancel()
        released = self.core.cold_gate.drain()
        log.info("answered %d held request(s) for shutdown", released)
        grace = self.settings.drain_timeout
        stops = []
        if self._ext_proc_server is not None:
            stops.append(self._ext_proc_server.stop(grace))
        if self._scaler_server is not None:
            stops.append(self._scaler_server.stop(min(grace, 1.0)))
        if self._peer_server is not None:
            stops.append(self._peer_server.stop(min(grace, 1.0)))
        await asyncio.gather(*stops)
        if self.peers is not None:
            await self.peers.stop()
        with contextlib.suppress(Exception):
            await self.provider.stop()
        await self.admin.stop()
        if self.telemetry is not None:
            # Flushing exports blocks: keep the event loop free while it does.
            await asyncio.to_thread(self.telemetry.shutdown)
        self._stopped.set()
        log.info("zerohop stopped")

    async def __aenter__(self) -> ZerohopServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
