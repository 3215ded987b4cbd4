"""The admin HTTP server: liveness, readiness and a JSON status document of every target.

- `GET /healthz`: 200 while the process runs.
- `GET /readyz`: 200 once targets are loaded and the gRPC servers listen; 503 while draining.
- `GET /status`: targets with replicas, routability, counts, held requests; servicer counters. At 10k
  targets this is megabytes: it is streamed, written a slice at a time (`pacing`).
- `GET /status?summary=1`: the same without the targets (their count instead).
- `GET /status/targets?offset=&limit=&q=`: one page of targets sorted by name, `q` a case-insensitive
  substring of the name or a host; what the status page polls.
- `GET /status/history?target=NS/NAME&target=...&since=TICK`: each target's history (`history`): replicas,
  rate, in flight, held as change-only rows, and its cold starts; with `since`, only rows after that tick
  (epoch second). At most `MAX_HISTORY_TARGETS` targets a request; 404 when the history is off.
- `GET /metrics`: the same counters for Prometheus (text format 0.0.4), streamed the same way.
- `GET /` and `/ui`: a status page with live charts (extproc/observability/statuspage.py).
"""

from __future__ import annotations

import datetime
import heapq
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from extproc import __version__
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.core.loglimit import LogLimiter, clip
from extproc.core.provider import Provider
from extproc.core.registry import TargetState
from extproc.core.traffic import TrafficSnapshot
from extproc.envoy.processor import ProcessorStats
from extproc.observability import statuspage
from extproc.observability.history import History
from extproc.observability.pacing import Pacer

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
        "kind": spec.kind,
        "metric": spec.metric.kind.value,
        "metricName": spec.metric_name,
        "targetValue": spec.metric.target_value,
        "metricValue": state.metric_value(snapshot),
        # Every metric KEDA is told about (an InterceptorRoute may scale on both).
        "metrics": [
            {"metric": m.kind.value, "targetValue": m.target_value, "metricValue": state.metric_value(snapshot, m)}
            for m in spec.scaling_metrics
        ],
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


# Targets per page of /status/targets: the default, and the most one request may ask for.
PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 500
MAX_HISTORY_TARGETS = 500


class StatusView:
    """The status document, whole (`document`, `stream`), without its targets (`summary`) or a page of
    them (`page`). The streamed and paged forms give the loop back between targets (`pacing`)."""

    def __init__(
        self,
        core: Core,
        provider: Provider | None,
        stats: ProcessorStats,
        scaler_calls: dict[str, int],
        extra: Callable[[], dict[str, Any]] | None = None,
        all_replicas: AllReplicas | None = None,
    ) -> None:
        self._core = core
        self._provider = provider
        self._stats = stats
        self._scaler_calls = scaler_calls
        self._extra = extra
        self._all_replicas = all_replicas

    def _head(self) -> dict[str, Any]:
        return {
            **(self._extra() if self._extra is not None else {}),
            "serverTime": _iso(time.time()),
            "provider": self._provider.status().as_dict() if self._provider is not None else None,
            "version": __version__,
        }

    def _tail(self) -> dict[str, Any]:
        core = self._core
        return {
            "heldTotal": core.cold_gate.held_total,
            "draining": core.cold_gate.draining,
            "extProc": self._stats.as_dict(),
            "scalerCalls": dict(self._scaler_calls),
            "activations": core.bus.published,
        }

    def _target(self, state: TargetState, now: float) -> dict[str, Any]:
        return target_status(state, self._provider, now, self._all_replicas)

    def document(self) -> dict[str, Any]:
        now = time.monotonic()
        targets = [self._target(state, now) for state in self._core.registry]
        return {**self._head(), "targets": targets, **self._tail()}

    def summary(self) -> dict[str, Any]:
        states = list(self._core.registry)
        routable = sum(1 for state in states if state.gate.routable)
        return {**self._head(), "targetCount": len(states), "routableCount": routable, **self._tail()}

    async def stream(self, pacer: Pacer) -> AsyncIterator[bytes]:
        """`document` as JSON, written target by target."""
        now = time.monotonic()
        head = json.dumps({**self._head(), **self._tail()})
        yield (head[:-1] + ', "targets": [').encode()
        separator = ""
        for state in list(self._core.registry):
            yield (separator + json.dumps(self._target(state, now))).encode()
            separator = ", "
            await pacer.pause()
        yield b"]}"

    async def page(self, offset: int, limit: int, query: str, pacer: Pacer) -> dict[str, Any]:
        """Targets `offset` to `offset + limit` of those whose name or a host contains `query` (any case),
        sorted by namespace and name; `total` is how many match."""
        needle = query.strip().lower()
        matching: list[TargetState] = []
        for state in list(self._core.registry):
            if not needle or needle in str(state.key).lower() or any(needle in h.lower() for h in state.spec.hosts):
                matching.append(state)
            await pacer.pause()
        # The first pages without sorting them all (10k keys: ~5 ms in one piece).
        ordered = heapq.nsmallest(offset + limit, matching, key=lambda state: state.key)
        now = time.monotonic()
        targets = []
        for state in ordered[offset:]:
            targets.append(self._target(state, now))
            await pacer.pause()
        return {"total": len(matching), "offset": offset, "limit": limit, "query": query, "targets": targets}


class StatusSource(Protocol):
    """What the admin server serves /status from (`StatusView`)."""

    def summary(self) -> dict[str, Any]: ...
    def stream(self, pacer: Pacer) -> AsyncIterator[bytes]: ...
    async def page(self, offset: int, limit: int, query: str, pacer: Pacer) -> dict[str, Any]: ...


Metrics = Callable[[Pacer], AsyncIterator[bytes]]


def _whole_number(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected a whole number, got {clip(raw, 40)!r}\n") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name}: must be {low}..{high}, got {value}\n")
    return value


class AdminServer:
    """Serves /healthz, /readyz, /status, /status/targets, /metrics and the status page on the admin address."""

    def __init__(
        self,
        status: StatusSource,
        ready: Callable[[], bool],
        metrics: Metrics | None = None,
        history: History | None = None,
    ) -> None:
        self._status = status
        self._ready = ready
        self._metrics = metrics
        self._history = history
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_handler)
        app.router.add_get("/status/targets", self._targets_handler)
        app.router.add_get("/status/history", self._history_handler)
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

    async def _status_handler(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("summary") not in (None, "", "0", "false"):
            return web.json_response(self._status.summary())
        return await _stream(request, "application/json; charset=utf-8", self._status.stream(Pacer()))

    async def _targets_handler(self, request: web.Request) -> web.Response:
        offset = _whole_number(request, "offset", 0, 0, 10**9)
        limit = _whole_number(request, "limit", PAGE_LIMIT, 1, MAX_PAGE_LIMIT)
        query = request.query.get("q", "")[:200]
        return web.json_response(await self._status.page(offset, limit, query, Pacer()))

    async def _history_handler(self, request: web.Request) -> web.StreamResponse:
        if self._history is None:
            raise web.HTTPNotFound(text="the history is off (--history-max-mib 0)\n")
        names = request.query.getall("target", [])
        if len(names) > MAX_HISTORY_TARGETS:
            raise web.HTTPBadRequest(text=f"target: at most {MAX_HISTORY_TARGETS} a request, got {len(names)}\n")
        since = request.query.get("since")
        after = _whole_number(request, "since", 0, 0, 2**32 - 1) if since else None
        keys = [TargetKey.parse(name[:300]) for name in names]
        chunks = self._history.stream(keys, after, Pacer())
        return await _stream(request, "application/json; charset=utf-8", chunks)

    async def _metrics_handler(self, request: web.Request) -> web.StreamResponse:
        assert self._metrics is not None
        return await _stream(request, _PROMETHEUS_TYPE, self._metrics(Pacer()))


async def _stream(request: web.Request, content_type: str, chunks: AsyncIterator[bytes]) -> web.StreamResponse:
    """Send `chunks` as they come (chunked transfer): a big document is never one piece on the loop. The
    first chunk is produced before the headers go out, so a failure before it is still a plain 500."""
    first = await anext(chunks, b"")
    response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-store"})
    await response.prepare(request)
    await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response
