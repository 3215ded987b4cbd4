"""The scoped EnvoyFilter on the real Envoy: requests to a virtual host no HTTPScaledObject names never open
a stream to zerohop; requests to a managed host do (and are held while it is cold). A host with a trailing dot
reaches zerohop only once the gateway strips the dot (docs/istio.md's EnvoyFilter)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from extproc.app.server import ZerohopServer
from extproc.app.settings import Settings
from extproc.core.httpso import TargetKey
from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy import istio
from tests.helpers import free_port
from tests.integration.stack import httpso, never_ready
from tests.istio_gateway import istio_gateway_bootstrap

pytestmark = pytest.mark.envoy

DOCS = Path(__file__).resolve().parents[2] / "docs" / "istio.md"


def docs_envoyfilter(name: str) -> dict[str, Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    [document] = [
        d
        for block in blocks
        for d in yaml.safe_load_all(block)
        if isinstance(d, dict) and d.get("kind") == "EnvoyFilter" and d["metadata"]["name"] == name
    ]
    return document


def held_settings(tmp_path: Path) -> Settings:
    config = tmp_path / "zerohop.yaml"
    config.write_text(httpso("managed") + never_ready("managed"))
    return Settings(
        config=config,
        state_dir=tmp_path,
        ext_proc_address="127.0.0.1:0",
        scaler_address="127.0.0.1:0",
        admin_address="127.0.0.1:0",
        hold_timeout=1.0,
        autoscale=False,
    )


async def test_only_managed_virtual_hosts_reach_zerohop(tmp_path: Path) -> None:
    settings = held_settings(tmp_path)
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


async def test_a_trailing_dot_host_reaches_zerohop_once_the_docs_envoyfilter_strips_it(tmp_path: Path) -> None:
    settings = held_settings(tmp_path)
    server = ZerohopServer(settings)
    await server.start()
    try:
        scoped = istio.envoyfilter(hosts=["managed.test"], hold_timeout=settings.hold_timeout)
        strip = docs_envoyfilter("strip-trailing-host-dot")
        assert strip["spec"]["workloadSelector"]["labels"] == istio.INGRESS_GATEWAY_SELECTOR
        stats = server.processor.stats
        for extra, expected in (((), 404), ((strip,), 504)):
            listen, admin, upstream = free_port(), free_port(), free_port()
            bootstrap = istio_gateway_bootstrap(
                scoped,
                ["managed.test"],
                ext_proc_port=server.ext_proc_port,
                listen_port=listen,
                admin_port=admin,
                upstream_port=upstream,
                hcm_envoyfilters=extra,
            )
            workdir = tmp_path / f"envoy-{len(extra)}"
            async with EnvoyProcess(bootstrap, admin, workdir=workdir), aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{listen}/"
                async with session.get(url, headers={"Host": "managed.test."}) as response:
                    assert response.status == expected, extra
            if not extra:
                # Istio as it ships: the dotted host matches no virtual host, and zerohop never hears of it.
                assert (stats.streams, stats.cold_requests) == (0, 0)
        # With the dot stripped: held like managed.test until the 1 s hold budget ran out.
        assert (stats.streams, stats.cold_requests) == (1, 1)
        state = server.core.registry.get(TargetKey("default", "managed"))
        assert state is not None
        assert state.traffic.requests == 1
    finally:
        await server.stop()
