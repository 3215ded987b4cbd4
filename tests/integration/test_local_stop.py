"""The local provider's stop leaves no replica process behind, not even one of a target removed just before."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.providers.local.provider import LocalProvider
from tests.helpers import wait_for
from tests.integration.stack import PYTHON, free_port_block, httpso

# Ignores SIGTERM, so only the SIGKILL after the grace period ends it: stopping it takes that long.
_STUBBORN = (
    "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(3600)"
)


def stubborn(name: str, pid_file: Path) -> str:
    first = free_port_block(2)
    return f"""
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {{name: {name}}}
spec:
  command: [{PYTHON}, -c, "{_STUBBORN}", "{pid_file}"]
  portRange: {first}-{first + 1}
  readinessProbe: {{tcpSocket: {{}}, periodSeconds: 0.1}}
  startupTimeoutSeconds: 3600
  terminationGracePeriodSeconds: 1
"""


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_stop_waits_for_the_replicas_of_a_target_removed_just_before(tmp_path: Path) -> None:
    pid_file = tmp_path / "stubborn.pid"
    config = tmp_path / "zerohop.yaml"
    config.write_text(httpso("gone", replicas="{min: 1, max: 1}") + stubborn("gone", pid_file))
    provider = LocalProvider(config, state_dir=tmp_path)
    await provider.start(Core(hold_timeout=5, max_held_per_target=5, max_held_total=5))
    pid = 0
    try:

        async def started() -> bool:
            return pid_file.exists() and pid_file.read_text().isdigit()

        await wait_for(started, 10, 0.02, what="the replica process started")
        pid = int(pid_file.read_text())
        # A later mtime than the first write even on a coarse clock: the reload watcher compares mtimes.
        config.write_text("")
        stat = config.stat()
        os.utime(config, (stat.st_atime, stat.st_mtime + 5))

        async def removed() -> bool:
            return TargetKey("default", "gone") not in provider.targets

        await wait_for(removed, 10, 0.02, what="the target removed by the config reload")
        await provider.stop()
        # The removed target's replica was stopped in the background; stop waited for it (SIGKILL after the
        # grace period, then reaped), rather than returning while it still ran.
        assert not running(pid)
    finally:
        if pid and running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0)
