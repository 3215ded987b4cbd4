"""The aiohttp application and its lifecycle: request log, latency, injected faults,
error-to-Status mapping, and start/stop on a fixed port."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import errors
from .apiserver import ApiServer
from .handlers import Handlers, json_response
from .requestlog import RECORD_KEY, RequestLog, RequestRecord
from .watch import WatchHub

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpServer:
    def __init__(
        self, api: ApiServer, hub: WatchHub, requests: RequestLog, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.handlers = Handlers(api, hub)
        self.hub = hub
        self.requests = requests
        self.host = host
        self.port = port
        self.latency = 0.0
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self.handlers.handle)
        return app

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app(), handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.hub.drop_all()
        await runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        body: object = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        record = RequestRecord(
            request.method, request.path, dict(request.query), request.headers.get("Content-Type"), body
        )
        self.requests.records.append(record)
        request[RECORD_KEY] = record
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        fault = self.requests.take_fault(request.method, request.path)
        response: web.StreamResponse
        if fault is not None:
            error = errors.ApiError(fault.status, fault.reason, fault.message, fault.details)
            response = json_response(error.status(), status=fault.status)
            response.headers.update(fault.headers)
        else:
            try:
                response = await handler(request)
            except errors.ApiError as exc:
                response = json_response(exc.status(), status=exc.code)
            except web.HTTPException:
                raise
            except Exception as exc:
                log.exception("kubeemu: %s %s failed", request.method, request.path_qs)
                error = errors.internal(repr(exc))
                response = json_response(error.status(), status=error.code)
        if record.status is None:
            record.status = response.status
        return response
