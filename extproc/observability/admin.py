"""The admin HTTP server: liveness, readiness and a JSON status document of every target.

- `GET /healthz`: 200 while the process runs.
- `GET /readyz`: 200 once targets are loaded and the gRPC servers listen; 503 while draining.
- `GET /status`: targets with replicas, routability, counts, held requests; servicer counters.
- `GET /metrics`: the same counters for Prometheus (text format 0.0.4).
- `GET /` and `/ui`: a status page with live charts (extproc/observability/statuspage.py).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from extproc import __version__
from extproc.core.engine import Core
from extproc.core.loglimit import LogLimiter, clip
from extproc.core.provider import Provider
from extproc.core.registry import TargetState
from extproc.core.traffic import TrafficSnapshot
from extproc.envoy.processor import ProcessorStats
from extproc.observability import statuspage

_PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger(__name__)


class _ServerLog:
    """Stands in for aiohttp's server logger, which writes a traceback for every malformed request: a
    malformed request costs at most one rate-limited line; a failure of zerohop's own handlers is logged with
    its traceback the first time, then rate-limited."""

    def __init__(self) -> None:
        self._malformed = LogLimiter(log)
        self._failed = LogLimiter(log)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        # aiohttp logs non-HTTP bytes (a TLS hello, a port scan) at DEBUG: keep that, without the traceback.
        kwargs.pop("exc_info", None)
        log.debug(*args, **kwargs)

    def exception(self, message: str, *args: Any, exc_info: BaseException | bool = True, **_: Any) -> None:
        remote = clip(str(args[0]), 64) if args else "?"
        if isinstance(exc_info, HttpProcessingError):
            problem = clip(" ".join(str(exc_info.message).split()), 200)
            self._malformed.log(
                logging.WARNING, "malformed HTTP request to the admin server from %s: %s", remote, problem
            )
        else:
            self._failed.log(
                logging.WARNING, "admin server: %s", clip(message % args if args else message), traceback_once=True
            )


AllReplicas = Callable[[TargetState], tuple[TrafficSnapshot, int]]


def target_status(
    state: TargetState, provider: Provider | None, now: float, all_replicas: AllReplicas | None = None
) -> dict[str, Any]:
    spec = state.spec
    snapshot = state.snapshot(now)
    replicas = provider.replicas(state.key) if provider is not None else None
    return {
        "name": str(state.key),
        "hosts": list(spec.hosts),
        "pathPrefixes": list(spec.path_prefixes),
        "metric": spec.metric.kind.value,
        "metricName": spec.metric_name,
        "targetValue": spec.metric.target_value,
        "metricValue": state.metric_value(snapshot),
        "routable": state.gate.routable,
        "replicas": None if replicas is None else {"desired": replicas.desired, "ready": replicas.ready},
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "inFlight": snapshot.in_flight,
        "held": snapshot.held,
        "requests": snapshot.requests,
        "rate": snapshot.rate,
        "wakes": state.gate.wakes,
        "coldStarts": state.gate.cold_starts,
        "lastColdStart": _iso(state.gate.last_cold_start),
        "lastColdStartSeconds": _round(state.gate.last_cold_duration),
        "coldForSeconds": _round(now - state.gate.cold_since) if state.gate.cold_since is not None else None,
        # Requests zerohop let through that the gateway answered itself with 503 "no healthy upstream".
        "releaseFailures": state.gate.release_failures,
        "outcomes": dict(state.traffic.outcomes),
        "holdBudgetSeconds": state.hold_budget,
        "window": spec.metric.window,
        "granularity": spec.metric.granularity,
        "allReplicas": _all_replicas(state, all_replicas),
    }


def _all_replicas(state: TargetState, all_replicas: AllReplicas | None) -> dict[str, Any] | None:
    """What KEDA is told: this replica's counts plus the other replicas' last known ones."""
    if all_replicas is None:
        return None
    totals, peers = all_replicas(state)
    return {
        "inFlight": totals.in_flight,
        "held": totals.held,
        "rate": totals.rate,
        "metricValue": state.metric_value(totals),
        "peersCounted": peers,
    }


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def status_document(
    core: Core,
    provider: Provider | None,
    stats: ProcessorStats,
    scaler_calls: dict[str, int],
    extra: dict[str, Any] | None = None,
    all_replicas: AllReplicas | None = None,
) -> dict[str, Any]:
    now = time.monotonic()
    return {
        **(extra or {}),
        "serverTime": _iso(time.time()),
        "provider": provider.status().as_dict() if provider is not None else None,
        "version": __version__,
        "targets": [target_status(state, provider, now, all_replicas) for state in core.registry],
        "heldTotal": core.cold_gate.held_total,
        "draining": core.cold_gate.draining,
        "extProc": stats.as_dict(),
        "scalerCalls": dict(scaler_calls),
        "activations": core.bus.published,
    }


class AdminServer:
    """Serves /healthz, /readyz and /status on the admin address."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
        metrics: Callable[[], str] | None = None,
    ) -> None:
        self._status = status
        self._ready = ready
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_handler)
        statuspage.add_routes(app)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._metrics_handler)
        self._runner = web.AppRunner(app, access_log=None, logger=_ServerLog())
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _status_handler(self, _request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def _metrics_handler(self, _request: web.Request) -> web.Response:
        assert self._metrics is not None
        return web.Response(body=self._metrics().encode(), headers={"Content-Type": _PROMETHEUS_TYPE})
