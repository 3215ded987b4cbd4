"""bench/ keeps its promises without being a timed test: docs/performance.md is what the report code makes
of the committed run, and the in-process hot-path harness checks what it times."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import hotpath, report

ROOT = Path(__file__).resolve().parents[2]
PERFORMANCE = ROOT / "docs" / "performance.md"


def test_performance_page_is_the_report_of_the_committed_run() -> None:
    text = PERFORMANCE.read_text()
    found = re.search(r"--report-only (bench/results/\S+\.json)", text)
    assert found, "docs/performance.md does not name the run it was generated from"
    source = found.group(1)
    document = json.loads((ROOT / source).read_text())
    assert report.render(document, source) == text, (
        f"docs/performance.md is stale: run `python -m bench --report-only {source}`"
    )


def test_hot_path_harness_runs_both_handlers_and_checks_their_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hotpath, "REPEATS", 2)
    monkeypatch.setattr(hotpath, "CALLS", 500)
    result = hotpath.measure()  # raises if a handler waited, answered otherwise, or zerohop missed a count
    assert result["repeats"] == 2
    assert result["calls_per_repeat"] == 500
    assert result["request_bytes"] > 200


def test_hot_path_harness_refuses_a_handler_that_waits() -> None:
    async def waits(_requests: object, context: object) -> None:
        import asyncio

        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="waited"):
        hotpath._per_call_us(waits, b"")
