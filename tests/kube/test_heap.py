"""The first sync's documents are built with the cyclic collector paused and frozen once loaded, so no
collection walks the caches of 10,000 targets again; the collector runs as usual afterwards, and a burst of
watch events is frozen once taken in."""

from __future__ import annotations

import gc

import pytest

from extproc.providers.kubernetes import heap
from tests.helpers import wait_for
from tests.kube.harness import HTTPSO, httpso, workload, zerohop
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


def test_a_burst_of_documents_is_frozen_and_a_trickle_is_not() -> None:
    # A full collection walks every document that came in since the last freeze: after the leader's sync of
    # 10,000 targets that was 100 to 400 ms on the event loop, several times over.
    now = [0.0]
    intake = heap.Intake(burst=100, window=10.0, clock=lambda: now[0])
    gc.unfreeze()
    for _ in range(99):
        intake.took()
    assert (intake.freezes, gc.get_freeze_count()) == (0, 0)
    documents = [{"metadata": {"name": str(i)}, "spec": {"hosts": [str(i)]}} for i in range(10)]
    intake.took()
    assert intake.freezes == 1
    assert gc.get_freeze_count() > 0
    assert not any(obj is documents[0] for obj in gc.get_objects())  # frozen: no collection walks it
    gc.unfreeze()
    for _ in range(99):  # a trickle: fewer than a burst per window, each window starting afresh
        now[0] += 1.0
        intake.took()
    now[0] += 10.5
    for _ in range(99):
        intake.took()
    assert intake.freezes == 1
    assert gc.get_freeze_count() == 0
    gc.unfreeze()


async def test_the_caches_freeze_a_burst_of_watch_events(
    kube_emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = kube_emulator
    workload(emu, "a")
    emu.create(httpso("a"))
    intake = heap.Intake(burst=20)
    monkeypatch.setattr(heap, "_INTAKE", intake)
    async with zerohop(emu, leader_election=False, gateway_stats_port=0) as server:
        await wait_for(lambda: server.provider.ready(), 10, what="ready")  # type: ignore[attr-defined]
        for i in range(25):
            emu.patch(HTTPSO, "HTTPScaledObject", "a", {"metadata": {"labels": {"n": str(i)}}})
        await wait_for(lambda: intake.freezes >= 1, 10, what="a freeze after a burst of events")
    gc.unfreeze()
