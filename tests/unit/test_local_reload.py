"""The local provider's reload: a broken edit keeps the last good version, an editor mid-save is waited out,
and every failure shows in /status and the metrics. No replica runs here (replicas.min is 0)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import pytest

from extproc.core.engine import Core
from extproc.core.httpso import ScaledTarget, TargetKey
from extproc.observability import metrics
from extproc.providers.local import provider as local_provider
from extproc.providers.local.provider import LocalProvider
from tests import promtext
from tests.helpers import wait_for


def target(name: str, host: str) -> str:
    return f"""
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  scaleTargetRef: {{name: app, service: app, port: 8080}}
  replicas: {{max: 2}}
---
"""


WORKLOAD = """
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {name: app}
spec:
  command: [python3, -m, http.server, "{port}"]
  portRange: 18500-18501
"""

GOOD = target("a", "a.localhost") + target("b", "b.localhost") + WORKLOAD
A, B = TargetKey("default", "a"), TargetKey("default", "b")


class RecordingCore(Core):
    """A real core that remembers every set of targets applied to it."""

    def __init__(self) -> None:
        super().__init__(hold_timeout=5, max_held_per_target=10, max_held_total=10)
        self.applied: list[set[TargetKey]] = []

    def apply_targets(self, targets: Iterable[ScaledTarget], clusters: Mapping[str, TargetKey]) -> None:
        targets = list(targets)
        self.applied.append({t.key for t in targets})
        super().apply_targets(targets, clusters)


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[tuple[LocalProvider, RecordingCore, Path]]:
    path = tmp_path / "zerohop.yaml"
    path.write_text(GOOD)
    provider = LocalProvider(path, state_dir=tmp_path / "state")
    core = RecordingCore()
    await provider.start(core)
    try:
        yield provider, core, path
    finally:
        await provider.stop()


def hosts(provider: LocalProvider) -> dict[str, tuple[str, ...]]:
    return {key.name: t.hosts for key, t in provider.targets.items()}


def values(provider: LocalProvider, core: Core) -> dict[str, float]:
    return promtext.parse(metrics.render(metrics.collect(metrics.Sources(core, provider))))


async def test_a_broken_document_keeps_its_target_and_replicas(
    started: tuple[LocalProvider, RecordingCore, Path],
) -> None:
    provider, core, path = started
    replica_set = provider._sets[B]
    assert values(provider, core)["zerohop_config_reload_success"] == 1
    path.write_text(GOOD.replace("hosts: [b.localhost]", "host: [b2.localhost]"))
    provider.reload()
    assert hosts(provider) == {"a": ("a.localhost",), "b": ("b.localhost",)}
    assert provider._sets[B] is replica_set
    assert core.applied[-1] == {A, B}

    status = provider.status().as_dict()
    assert status["reload"]["success"] is False
    [problem] = status["problems"]
    assert problem["file"] == str(path)
    assert (problem["document"], problem["kind"], problem["name"]) == (2, "HTTPScaledObject", "b")
    assert "spec.host: unknown field; did you mean hosts?" in problem["message"]
    assert problem["since"] is not None
    numbers = values(provider, core)
    assert numbers["zerohop_config_reload_success"] == 0
    assert numbers["zerohop_config_rejected_documents"] == 1
    first_success = numbers["zerohop_config_last_reload_success_timestamp_seconds"]

    # The problem keeps its first-seen time across reloads; fixing the document applies it.
    provider.reload()
    assert provider.status().as_dict()["problems"][0]["since"] == problem["since"]
    path.write_text(GOOD.replace("b.localhost", "b2.localhost"))
    provider.reload()
    assert hosts(provider)["b"] == ("b2.localhost",)
    assert provider.status().as_dict()["problems"] == []
    numbers = values(provider, core)
    assert numbers["zerohop_config_reload_success"] == 1
    assert numbers["zerohop_config_last_reload_success_timestamp_seconds"] >= first_success


async def test_an_unusable_file_shows_in_status(started: tuple[LocalProvider, RecordingCore, Path]) -> None:
    provider, core, path = started
    path.write_text("kind: [unclosed\n")
    provider.reload()
    assert set(provider.targets) == {A, B}
    error = provider.status().as_dict()["reload"]["error"]
    assert "not valid YAML" in error["message"]
    assert error["since"] is not None
    assert values(provider, core)["zerohop_config_reload_success"] == 0


async def test_an_editor_mid_save_is_waited_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_provider, "_RELOAD_POLL", 0.01)
    monkeypatch.setattr(local_provider, "_SETTLE", 0.5)
    path = tmp_path / "zerohop.yaml"
    path.write_text(GOOD)
    provider = LocalProvider(path, state_dir=tmp_path / "state")
    core = RecordingCore()
    await provider.start(core)  # the watcher polls every 10 ms from here
    try:
        path.write_text("")  # truncated: the editor is about to write the new content
        await asyncio.sleep(0.1)  # many polls: the watcher sees the empty file
        path.write_text(GOOD.replace("a.localhost", "a2.localhost"))
        await wait_for(lambda: hosts(provider).get("a") == ("a2.localhost",), 10, what="the edit applied")
        assert all(applied for applied in core.applied), core.applied
    finally:
        await provider.stop()


async def test_an_emptied_file_is_applied_with_a_warning(
    started: tuple[LocalProvider, RecordingCore, Path], caplog: pytest.LogCaptureFixture
) -> None:
    provider, _core, path = started
    path.write_text("# everything removed on purpose\n")
    with caplog.at_level(logging.WARNING):
        provider.reload()
    assert provider.targets == {}
    assert "has no documents: removing all 2 target(s)" in caplog.text
