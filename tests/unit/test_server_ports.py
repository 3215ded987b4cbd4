"""A zerohop server whose port is taken fails at start with a message naming the flag; it never shares it."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from extproc.app.server import ZerohopServer
from extproc.app.settings import Settings, SettingsError
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.core.provider import ReplicaCounts


class IdleProvider:
    """A provider with no targets: enough to start the servers."""

    async def start(self, core: Core) -> None:
        pass

    async def stop(self) -> None:
        pass

    def wake(self, key: TargetKey) -> None:
        pass

    def reconfirm(self, key: TargetKey) -> None:
        pass

    def replicas(self, key: TargetKey) -> ReplicaCounts | None:
        return None

    def ready(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"provider": "idle"}


def settings(**changes: Any) -> Settings:
    defaults = {
        "ext_proc_address": "127.0.0.1:0",
        "scaler_address": "127.0.0.1:0",
        "admin_address": "127.0.0.1:0",
        "autoscale": False,
    }
    return Settings(**{**defaults, **changes})


async def test_a_second_zerohop_on_a_bound_ext_proc_port_fails_at_start() -> None:
    async with ZerohopServer(settings(), provider=IdleProvider()) as first:
        taken = f"127.0.0.1:{first.ext_proc_port}"
        second = ZerohopServer(settings(ext_proc_address=taken), provider=IdleProvider())
        with pytest.raises(SettingsError, match=f"--ext-proc-address: cannot listen on {taken}"):
            await second.start()
        await second.stop()


async def test_a_port_held_by_another_grpc_server_is_not_shared() -> None:
    # gRPC's default is SO_REUSEPORT: another process using it could share the port with zerohop.
    other = grpc.aio.server()
    port = other.add_insecure_port("127.0.0.1:0")
    await other.start()
    try:
        server = ZerohopServer(settings(scaler_address=f"127.0.0.1:{port}"), provider=IdleProvider())
        with pytest.raises(SettingsError, match="--scaler-address: cannot listen"):
            await server.start()
        await server.stop()
    finally:
        await other.stop(None)
