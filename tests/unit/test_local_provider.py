"""The local provider following edits of its config file (no gateway, no autoscaler)."""

from __future__ import annotations

import sys
from pathlib import Path

from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.providers.local import config as local_config
from extproc.providers.local.provider import LocalProvider

KEY = TargetKey("default", "app")


def config(min_replicas: int) -> str:
    return f"""
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: app}}
spec:
  hosts: [app.test]
  scaleTargetRef: {{name: app, service: app, port: 8080}}
  replicas: {{min: {min_replicas}, max: 2}}
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {{name: app}}
spec:
  command: [{sys.executable}, -c, "import time; time.sleep(60)"]
  portRange: 1-2
  readinessProbe: {{tcpSocket: {{}}}}
  terminationGracePeriodSeconds: 0.5
"""


async def _desired_after_edit(tmp_path: Path, *, autoscaled: bool) -> int:
    path = tmp_path / "zerohop.yaml"
    path.write_text(config(0))
    provider = LocalProvider(path, state_dir=tmp_path, autoscaled=autoscaled)
    await provider.start(Core(hold_timeout=5, max_held_per_target=10, max_held_total=10))
    try:
        provider._apply(local_config.parse(config(1), str(path)))
        counts = provider.replicas(KEY)
        assert counts is not None
        return counts.desired
    finally:
        await provider.stop()


async def test_without_the_autoscaler_an_edited_min_is_applied(tmp_path: Path) -> None:
    assert await _desired_after_edit(tmp_path, autoscaled=False) == 1


async def test_with_the_autoscaler_an_edited_min_is_left_to_it(tmp_path: Path) -> None:
    assert await _desired_after_edit(tmp_path, autoscaled=True) == 0
