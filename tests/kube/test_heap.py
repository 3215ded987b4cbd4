"""The first sync's documents are built with the cyclic collector paused and frozen once loaded, so no
collection walks the caches of 10,000 targets again; the collector runs as usual afterwards."""

from __future__ import annotations

import gc

import pytest

from tests.kube.harness import httpso, workload, zerohop
from tests.kubeemu import KubeEmulator

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = pytest.mark.kube


async def test_the_first_syncs_documents_are_frozen_and_collection_goes_on(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    for name in ("a", "b"):
        workload(emu, name)
        emu.create(httpso(name))
    gc.unfreeze()
    async with zerohop(emu, leader_election=False, gateway_stats_port=0) as server:
        documents = server.provider._httpsos()  # type: ignore[attr-defined]
        assert set(documents) == {("default", "a"), ("default", "b")}
        cached = {id(document) for document in documents.values()}
        # gc.get_objects() lists generations 0 to 2: what a collection walks; frozen objects are not in them.
        assert not any(id(obj) in cached for obj in gc.get_objects())
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
