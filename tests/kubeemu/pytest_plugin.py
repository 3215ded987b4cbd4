"""pytest fixtures: `kube_emulator` (a running emulator) and `kube_api` (an ApiClient).

Load with `pytest_plugins = ["tests.kubeemu.pytest_plugin"]` in a test module
or the root conftest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes.aio import client

from .emulator import KubeEmulator


@pytest.fixture
async def kube_emulator() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(bookmark_interval=1.0) as emu:
        yield emu


@pytest.fixture
async def kube_api(kube_emulator: KubeEmulator) -> AsyncIterator[client.ApiClient]:
    async with kube_emulator.api_client() as api:
        yield api
