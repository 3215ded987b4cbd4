"""Which warm-path state a gateway pod runs for a virtual host, asked through the pod itself.

The scoped EnvoyFilter puts a probe route first in every managed virtual host (`config.probe_route`). A
request carrying `PROBE_HEADER` sent to one pod's listener with the host's name gets either the gateway's
own 204 saying `open` (ext_proc is off there) or zerohop's 204 saying `gated` (ext_proc is on and asked
zerohop first). The answer comes from the config that pod is running, so a switch is confirmed exactly,
pod by pod, whatever istiod's push delay; neither answer reaches the app.
"""

from __future__ import annotations

import enum

import aiohttp

from extproc.envoy.config import GATE_GATED, GATE_HEADER, GATE_OPEN, PROBE_HEADER


class GateSeen(enum.Enum):
    """What one probe of one pod said."""

    GATED = "gated"
    OPEN = "open"
    UNKNOWN = "unknown"  # no answer, or not a probe answer (no such virtual host yet, the filter not applied)


class GatewayProber:
    """Probes gateway pods over keep-alive connections; one prober serves every pod."""

    def __init__(self, *, timeout: float = 1.0, connections: int = 32) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.probes = 0
        self.failures = 0
        self.last_error = ""

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=4)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector, auto_decompress=False)
        return self._session

    async def probe(self, ip: str, port: int, host: str) -> GateSeen:
        """Ask the pod at `ip:port` which state it runs for virtual host `host`."""
        self.probes += 1
        address = f"[{ip}]" if ":" in ip else ip
        headers = {"Host": host, PROBE_HEADER: "1"}
        try:
            async with self._client().get(f"http://{address}:{port}/", headers=headers) as response:
                await response.read()
                seen = response.headers.get(GATE_HEADER, "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.failures += 1
            self.last_error = f"{ip}:{port} ({host}): {type(exc).__name__}: {exc}"
            return GateSeen.UNKNOWN
        if seen == GATE_GATED:
            return GateSeen.GATED
        if seen == GATE_OPEN:
            return GateSeen.OPEN
        return GateSeen.UNKNOWN

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
