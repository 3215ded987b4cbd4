"""The scoped EnvoyFilter on the real Envoy: requests to a virtual host no HTTPScaledObject names never open
a stream to zerohop; requests to a managed host do (and are held while it is cold)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from extproc.app.server import ZerohopServer
from extproc.app.settings import Settings
from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy import istio
from tests.helpers import free_port
from tests.integration.stack import httpso, never_ready
from tests.istio_gateway import istio_gateway_bootstrap

pytestmark = pytest.mark.envoy


async def test_only_managed_virtual_hosts_reach_zerohop(tmp_path: Path) -> None:
    config = tmp_path / "zerohop.yaml"
    config.write_text(httpso("managed") + never_ready("managed"))
    settings = Settings(
        config=config,
        state_dir=tmp_path,
        ext_proc_address="127.0.0.1:0",
        scaler_address="127.0.0.1:0",
        admin_address="127.0.0.1:0",
        hold_timeout=1.0,
        autoscale=False,
    )
    server = ZerohopServer(settings)
    await server.start()
    try:
        document = istio.envoyfilter(hosts=["managed.test"], hold_timeout=settings.hold_timeout)
        listen, admin, upstream = free_port(), free_port(), free_port()
        bootstrap = istio_gateway_bootstrap(
            document,
            ["managed.test", "other.test"],
            ext_proc_port=server.ext_proc_port,
            listen_port=listen,
            admin_port=admin,
            upstream_port=upstream,
        )
        async with EnvoyProcess(bootstrap, admin, workdir=tmp_path / "envoy"), aiohttp.ClientSession() as session:

            async def get(host: str) -> int:
                async with session.get(f"http://127.0.0.1:{listen}/", headers={"Host": host}) as response:
                    return response.status

            stats = server.processor.stats
            for _ in range(5):
                assert await get("other.test") == 200
            assert stats.streams == 0, "an unmanaged virtual host opened ext_proc streams"
            assert await get("managed.test") == 504  # held, then the 1 s hold budget ran out
            assert stats.streams == 1
            assert stats.cold_requests == 1
    finally:
        await server.stop()
