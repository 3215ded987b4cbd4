"""`zerohop demo --canary` run for real (Envoy, zerohop and two app versions as processes): both versions wake
from zero on their own share, the split shows in what it prints, and the status page it names answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.envoy


def test_the_canary_demo_wakes_both_versions_by_their_share_and_shows_the_split(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "extproc", "demo", "--canary", "--port", str(free_port())]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as demo:
        assert demo.stdout is not None
        lines: list[str] = []
        try:
            for line in demo.stdout:
                lines.append(line.rstrip("\n"))
                page = re.search(r"status page\s+(http://127\.0\.0\.1:\d+/)\s", line)
                if page:
                    # The URL it prints is the live status page, while the demo runs.
                    with urllib.request.urlopen(page.group(1), timeout=10) as response:
                        assert response.status == 200
                        assert response.headers["content-type"].startswith("text/html")
                    break
            lines += demo.stdout.read().splitlines()
            returncode = demo.wait(timeout=120)
        finally:
            if demo.poll() is None:
                demo.kill()
        stderr = demo.stderr.read() if demo.stderr else ""
    out = "\n".join(lines)
    assert returncode == 0, out + stderr
    assert any("status page  http://127.0.0.1:" in line for line in lines), out
    assert list(tmp_path.iterdir()) == [], "the demo removes its temporary directory"

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    # Both versions start at zero and each is woken and has a ready replica while the load runs.
    done = first("<- done:")
    for version in ("backend-v1", "backend-v2"):
        at_zero = first(f"{version} replicas: 0 desired, 0 ready")
        assert at_zero < first(f"{version} replicas: [1-9] desired, [1-9] ready") < done, out
    # The split the clients saw, and what zerohop counted for each version (what KEDA reads).
    answered = re.search(r"answered by backend-v1 (\d+) \(\d+%\), backend-v2 (\d+) \(\d+%\)", lines[done])
    assert answered is not None, lines[done]
    v1, v2 = map(int, answered.groups())
    assert 0.65 <= v1 / (v1 + v2) <= 0.95, lines[done]  # 80/20 of 240 requests: one sigma is 2.6 points
    assert re.search(r"<- done: \{200: \d+\},", lines[done]), lines[done]  # every answer 200, no other status
    counted = re.search(r"zerohop counted \(what KEDA reads\): backend-v1 (\d+), backend-v2 (\d+)", out)
    assert counted is not None, out
    # From the gateway's stats once the warm path opened (see docs/how-it-works.md for the baseline's limit).
    for count, seen in zip(map(int, counted.groups()), (v1, v2), strict=True):
        assert abs(count - seen) <= max(1, seen // 100), out
    # Each scaled by its own share: the 80% version to more replicas than the 20% one, then both back to zero.
    peaks = {m.group(1): int(m.group(2)) for m in re.finditer(r"(backend-v\d): woke from zero .*?peak (\d+)", out)}
    assert peaks.keys() == {"backend-v1", "backend-v2"}, out
    assert peaks["backend-v1"] > peaks["backend-v2"] >= 1, out
    assert "back to zero replicas" in out
    assert first(r"warm path: open \(the gateway loaded it\)") < first(r"warm path: gated \(the gateway loaded it\)")
