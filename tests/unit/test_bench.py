"""bench/ keeps its promises without being a timed test: docs/performance.md is what the report code makes
of the committed run, and the in-process hot-path harness checks what it times."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench import hotpath, report, scale_report

ROOT = Path(__file__).resolve().parents[2]
PERFORMANCE = ROOT / "docs" / "performance.md"


def test_performance_page_is_the_report_of_the_committed_run() -> None:
    text = PERFORMANCE.read_text()
    found = re.search(r"--report-only (bench/results/\S+\.json)", text)
    assert found, "docs/performance.md does not name the run it was generated from"
    source = found.group(1)
    document = json.loads((ROOT / source).read_text())
    # The scale section is written by `python -m bench.scale --report`; `python -m bench` keeps it.
    assert scale_report.keep_section(text, report.render(document, source)) == text, (
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


def _stats_sample(overhead_ms: float) -> dict[str, object]:
    return {
        "status": 200,
        "cold_header": "true",
        "total_ms": 400.0 + overhead_ms,
        "pushed_at_ms": 390.0,
        "loaded_at_ms": 393.0,
        "overhead_ms": overhead_ms,
        "overhead_push_ms": overhead_ms + 3.0,
        "load_ms": 3.0,
        "poll_gap_ms": 3.0,
        "polls": 1,
        "warm_ms": [2.0, 2.0, 2.0],
        "wakes": 1,
    }


def _cold_only_run(committed: dict[str, object]) -> dict[str, object]:
    """What `python -m bench --only cold` returns, with made-up samples: overheads of 1..20 ms."""
    admin = json.loads(json.dumps(committed["cold_start"]))
    for index, sample in enumerate(admin["samples"], start=1):
        sample["overhead_ms"] = float(index)
    stats = {
        "zerohop_flags": ["--hold-timeout", "30s"],
        "ready_delay": 0.3,
        "istiod_lag": 0.1,
        "cluster": "outbound|8080||cold.default.svc.cluster.local",
        "samples": [_stats_sample(float(ms)) for ms in range(1, 21)],
        "zerohop_ext_proc": {"cold_requests": 20, "released": 20},
        "gateway": {"confirmations": {"stats": 20}, "pods": [{"name": "istio-ingressgateway-0", "stats": "ok"}]},
        "seconds": 15.0,
    }
    machine = {**committed["machine"], "cpu_model": "Another CPU"}  # type: ignore[dict-item]
    return {
        "command": "python -m bench --only cold --merge-into bench/results/x.json",
        "started": "2026-12-03T10:00:00+00:00",
        "finished": "2026-12-03T10:01:05+00:00",
        "machine": machine,
        "options": {"cold_samples": 20},
        "cold_start": admin,
        "cold_start_stats": stats,
    }


def _committed() -> tuple[str, dict[str, object]]:
    found = re.search(r"--report-only (bench/results/\S+\.json)", PERFORMANCE.read_text())
    assert found
    return found.group(1), json.loads((ROOT / found.group(1)).read_text())


def test_a_cold_only_run_merges_into_a_saved_run_and_says_so() -> None:
    from bench.runner import merge_partial

    source, committed = _committed()
    before = json.dumps(committed)
    partial = _cold_only_run(committed)
    merged = merge_partial(committed, partial)
    assert json.dumps(committed) == before, "the saved run itself is not modified"
    for key in set(committed) - {"cold_start", "cold_start_stats", "partial_runs"}:
        assert merged[key] == committed[key], key
    assert merged["cold_start"] is partial["cold_start"]
    assert merged["cold_start_stats"] is partial["cold_start_stats"]
    record = merged["partial_runs"][-1]  # type: ignore[index]
    assert record["command"] == partial["command"]
    assert record["seconds"] == 65
    assert record["sections"] == ["cold_start", "cold_start_stats"]
    assert record["replaced"]["cold_start"] == committed["cold_start"]

    text = report.render(merged, source)
    # Both paths in one table: p50 (median), p90 (nearest rank: the 18th of 20), max, samples.
    assert "| **cold start: admin API** | the gateway's admin API (`/clusters`) first shows the replica " in text
    assert "`membership_healthy` 1 | 10.5 | 18.0 | 20.0 | 20 |" in text
    assert "| cold start: gateway pod stats, upper bound | istiod's push: the pod's EDS file written " in text
    assert "EDS file written | 13.5 | 21.0 | 23.0 | 20 |" in text
    assert f"measured by `{partial['command']}` on 2026-12-03 at 10:00 UTC" in text
    assert "not the machine of the rest of this page" in text
    assert "| cold-start overhead p50 ≤ 20 ms, gateway pod stats | 10.5 ms (upper bound 13.5 ms; measured later" in text
    # Everything outside the cold-start section and the notes is what the saved run alone renders.
    alone = report.render(committed, source)
    assert text.split("## zerohop's own work")[1].split("## Cold start")[0] in alone


def test_merge_into_takes_a_cold_start_run_only(tmp_path: Path) -> None:
    saved = tmp_path / "run.json"
    saved.write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "A,cold", "--merge-into", str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--merge-into takes a cold-start run only" in done.stderr
    assert saved.read_text() == "{}"


def test_scale_benchmark_runs_every_window_at_ten_targets() -> None:
    from bench import scale, scale_report

    options = scale.Options(targets=10, rate=50.0, sync_timeout=60.0, quiet=0.5, settle=1.0)
    result = asyncio.run(scale.run(options))
    assert result["ready_s"] >= result["admin_up_s"] > 0
    windows = result["windows"]
    assert list(windows) == ["sync", "quiet", "burst", "routable", "scrape", "status"]
    assert windows["sync"]["done"], windows["sync"]
    assert windows["sync"]["statuses"] == windows["sync"]["of"] == 11
    assert windows["burst"]["updates"] == 10
    routable = windows["routable"]
    assert routable["samples"] == 10
    # Let go no sooner than --propagation-delay after the endpoint turned ready (no gateway pod to read).
    assert routable["propagation_delay_ms"] <= routable["released_p50_ms"] <= routable["released_max_ms"]
    assert "| EndpointSlice made ready -> held request let go" in scale_report.render_section([result], ["r.json"])
    assert windows["scrape"]["bytes"] > 0
    for name, window in windows.items():
        assert window["calls"] > 0 or name == "sync", (name, window)
        assert "p99_ms" in window or window["calls"] == 0
    assert "| burst |" in scale.render(result)
    section = scale_report.render_section([result], ["r10.json"])
    assert "| start -> ready <= 3 s |" in section
    page = scale_report.replace_section("# Performance\n", section)
    assert scale_report.replace_section(page, section) == page
    # `python -m bench` regenerates the page around the section and keeps it.
    assert scale_report.keep_section(page, "# Performance, again\n") == "# Performance, again\n\n" + section


def _load(requests: int) -> object:
    from bench.load import LoadResult

    return LoadResult(requests, 5.0, requests / 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0)


def test_setup_g_fails_its_check_when_a_warm_request_reaches_zerohop_or_goes_uncounted() -> None:
    from bench.load import LoadSpec
    from bench.runner import EXT_PROC_STATS, check

    spec = LoadSpec(duration=5)
    load = _load(10_000)
    counted = {"zerohop.target.requests": 10_003.0}
    assert check("G", "saturation", load, counted, spec)["ok"]  # type: ignore[arg-type]
    leaked = check("G", "saturation", load, {**counted, EXT_PROC_STATS + "streams_started": 7.0}, spec)  # type: ignore[arg-type]
    assert leaked["problems"] == ["7 ext_proc streams for 10000 requests on the open warm path"]
    missed = check("G", "saturation", load, {"zerohop.target.requests": 9_000.0}, spec)  # type: ignore[arg-type]
    assert missed["problems"] == ["zerohop counted 9000 target requests for 10000 completed"]
    failing = check("G", "saturation", load, {**counted, "zerohop.warm_path.stats_failures": 1.0}, spec)  # type: ignore[arg-type]
    assert failing["problems"] == ["1 failed reads of the gateway's stats"]


def test_setup_g_target_parses_and_its_replica_is_the_app_envoy_on_the_port_it_is_given() -> None:
    import yaml

    from bench.envoys import app_bootstrap, app_replica_command
    from bench.setups import WARM_TARGET
    from extproc.providers.local.config import parse

    target = replace(WARM_TARGET, hosts=(), command=app_replica_command("/bin/envoy", "/r.log"))
    config = parse(yaml.safe_dump_all(target.documents(18123)))
    assert not config.problems, config.problems
    (scaled,) = config.targets
    assert scaled.hosts == ()  # every host: the gateway's `*` virtual host, as wrk's Host header needs
    workload = config.workload_for(scaled)
    assert workload is not None
    argv = workload.argv(18123)
    bootstrap = json.loads(argv[argv.index("--config-yaml") + 1])
    assert bootstrap == app_bootstrap(18123, None)
    assert "admin" not in bootstrap  # replica Envoys must not fight over an admin port


def test_the_scale_floor_follows_the_emulators_continue_tokens() -> None:
    import aiohttp

    from bench.scale import continue_token
    from tests.kubeemu import KubeEmulator
    from tests.kubeemu.manifests import configmap

    emulator = KubeEmulator()
    for n in range(3):
        emulator.create(configmap(f"cm{n}", namespace="many"))

    async def first_page() -> bytes:
        async with emulator as emu, aiohttp.ClientSession() as session:
            url = f"{emu.url}/api/v1/namespaces/many/configmaps"
            async with session.get(url, params={"limit": "2"}) as response:
                return await response.read()

    body = asyncio.run(first_page())
    assert continue_token(body) == json.loads(body)["metadata"]["continue"]
    assert continue_token(b'{"metadata": {"resourceVersion": "7"}, "items": []}') == ""
