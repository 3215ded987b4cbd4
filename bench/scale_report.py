"""The scale benchmark's text: one run as it prints it (`render`), and the scale section of docs/performance.md
(`render_section`) from saved runs, kept when `python -m bench` regenerates the rest of the page.

Apart from `bench.scale` so that `python -m bench` can keep the section without importing the benchmark
(and the emulator and test harness behind it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def render(result: dict[str, Any]) -> str:
    lines = [
        f"N = {result['targets']}: start -> admin up {result['admin_up_s']} s, -> ready {result['ready_s']} s "
        f"(sync {result['sync_to_ready_s']} s); RSS at ready {result['rss_ready_mib']} MiB, "
        f"{result['kib_per_target']} KiB per target; probe warm {result['probe_warm_s']} s after ready"
        + (
            f"; zerohop CPU to ready {result['cpu_to_ready_s']} s; the emulator alone serves the first sync's "
            f"lists in {result['emulator_lists_s']} s"
            if "emulator_lists_s" in result
            else ""
        ),
        f"ext_proc at {result['rate']:g} calls/s:",
        "| window | seconds | calls | failed | > 1 s | p50 ms | p99 ms | max ms | what happened |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w in result["windows"].items():
        shown = {"seconds", "calls", "failed", "over_1s", "p50_ms", "p99_ms", "max_ms"}
        what = {k: v for k, v in w.items() if k not in shown}
        failed = sum(w["failed"].values())
        failed_text = f"{failed} {w['failed']}" if failed else "0"
        lines.append(
            f"| {name} | {w['seconds']} | {w['calls']} | {failed_text} | {w['over_1s']} | {w.get('p50_ms', '-')} | "
            f"{w.get('p99_ms', '-')} | {w.get('max_ms', '-')} | {json.dumps(what)} |"
        )
    return "\n".join(lines)


# docs/performance.md holds the last run between these lines; `python -m bench` regenerates the rest of the
# page and keeps them (`keep_section`).
SECTION_START = "<!-- bench.scale: written by python -m bench.scale --report; python -m bench keeps it -->"
SECTION_END = "<!-- /bench.scale -->"
# Issue 14's targets, checked at the largest N measured.
READY_S = 3.0
WRITTEN_S = 120.0
P99_MS = 50.0


def _window_cell(window: dict[str, Any] | None) -> str:
    if window is None:
        return "-"  # a run from before the window existed
    failed = sum(window["failed"].values())
    return f"{window.get('p99_ms', '-')} / {window.get('max_ms', '-')}" + (f", **{failed} failed**" if failed else "")


def _targets_met(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    windows = result["windows"]
    sync = windows["sync"]
    written = sync.get("all_written_s_after_start")
    rows = [
        (f"start -> ready <= {READY_S:g} s", f"{result['ready_s']} s", result["ready_s"] <= READY_S),
        (
            f"every ScaledObject and status written <= {WRITTEN_S:g} s after start",
            f"{written} s"
            if written is not None
            else f"not done: {sync['scaledobjects']} ScaledObjects, "
            f"{sync['statuses']} statuses of {sync['of']} after {sync['seconds']} s of sync",
            written is not None and written <= WRITTEN_S,
        ),
    ]
    for name, what in (("sync", "during the sync"), ("burst", "during 100 EndpointSlice updates"),
                       ("scrape", "during /metrics scrapes")):  # fmt: skip
        window = windows[name]
        p99 = window.get("p99_ms")
        ok = p99 is not None and p99 <= P99_MS and not sum(window["failed"].values())
        rows.append((f"ext_proc p99 <= {P99_MS:g} ms, no failed call, {what}", _window_cell(window), ok))
    return rows


def _released(result: dict[str, Any]) -> str:
    window = result["windows"].get("routable")
    if window is None:
        return "-"
    return (
        f"{window['released_p50_ms']} / {window['released_p90_ms']} / {window['released_max_ms']} "
        f"({window['propagation_delay_ms']})"
    )


def _sync_cpu(result: dict[str, Any]) -> str:
    cpu = result["windows"]["sync"].get("cpu_s")
    if not cpu:
        return "-"
    return f"{cpu['zerohop']} ({cpu['zerohop_loop']}) / {cpu['emulator']} / {cpu['bench']} / {cpu['machine']}"


# What the 10,000-target runs were found to spend their time on, and what changed: prose kept beside the code,
# put into the section as it is.
FINDINGS = Path(__file__).with_name("scale_findings.md")


def _before_after(before: dict[str, Any], after: dict[str, Any], source: str) -> list[str]:
    """Issue 14's figures at the largest N, an earlier run (`--before`) beside this one."""
    lines = [
        f"Before and after, N = {after['targets']:,} (before: `{source}`, the same command on the code this "
        "section's previous version measured):",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| start -> ready, s | {before['ready_s']} | {after['ready_s']} |",
    ]
    written = [r["windows"]["sync"].get("all_written_s_after_start", "not done") for r in (before, after)]
    lines.append(f"| every ScaledObject and status written, s after start | {written[0]} | {written[1]} |")
    for name, label in (("sync", "sync"), ("quiet", "quiet"), ("burst", "100 EndpointSlice updates"),
                        ("routable", "20 targets made routable"),
                        ("scrape", "3 /metrics scrapes"), ("status", "3 /status fetches")):  # fmt: skip
        cells = [_window_cell(r["windows"].get(name)) for r in (before, after)]
        lines.append(f"| ext_proc p99 / max ms, {label} | {cells[0]} | {cells[1]} |")
    return lines


def _column(results: list[dict[str, Any]], index: int) -> str:
    """`N=10,000`, or `N=10,000 (run 2)` for a second run of the same N."""
    targets = results[index]["targets"]
    same = [i for i, r in enumerate(results) if r["targets"] == targets]
    run = f" (run {same.index(index) + 1})" if len(same) > 1 else ""
    return f"N={targets:,}{run}"


def render_section(
    results: list[dict[str, Any]], sources: list[str], before: tuple[dict[str, Any], str] | None = None
) -> str:
    """The scale section of docs/performance.md from `python -m bench.scale --json` results (and an earlier
    run of the largest N, `before`, for a before/after table)."""
    lines = [
        SECTION_START,
        "## Scale: up to 10,000 targets on one replica (`bench.scale`)",
        "",
        "`python -m bench.scale --targets N --json FILE` for each N, then "
        f"`python -m bench.scale --report docs/performance.md {' '.join(sources)}"
        f"{' --before ' + before[1] if before is not None else ''}`: the API emulator in its own "
        "process holding N targets (HTTPScaledObject, Service, Deployment at 0, EndpointSlice), `zerohop serve "
        "--provider kubernetes` with the defaults (leader, ScaledObject management on, `--kube-api-qps 200`), "
        "and 100 ext_proc calls a second to the one warm target from ready on (an open loop: a stall shows as "
        "latency). See the module's docstring for the windows. On the shared 2-CPU machine, the emulator, "
        "zerohop and the load in one box.",
        "",
        "| | " + " | ".join(_column(results, i) for i in range(len(results))) + " |",
        "|---|" + "---|" * len(results),
    ]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(str(cell(r)) for r in results) + " |")

    row("start -> ready, s (admin up)", lambda r: f"{r['ready_s']} ({r['admin_up_s']})")
    row(
        "zerohop CPU to ready, s (imports included); the emulator alone serving the first sync's lists, s",
        lambda r: f"{r.get('cpu_to_ready_s', '-')}; {r.get('emulator_lists_s', '-')}",
    )
    row("memory per target, KiB", lambda r: r["kib_per_target"])
    row(
        "EndpointSlice made ready -> held request let go, p50 / p90 / max ms (of it, the propagation delay)",
        _released,
    )
    row(
        "every ScaledObject / status written, s after start",
        lambda r: (
            f"{r['windows']['sync'].get('scaledobjects_s_after_start', 'not done')} / "
            f"{r['windows']['sync'].get('statuses_s_after_start', 'not done')}"
        ),
    )
    row("CPU s in the sync: zerohop (its loop thread) / emulator / bench / whole machine", _sync_cpu)
    for name, label in (("sync", "sync"), ("quiet", "quiet"), ("burst", "100 EndpointSlice updates"),
                        ("routable", "20 targets made routable"),
                        ("scrape", "3 /metrics scrapes"), ("status", "3 /status fetches")):  # fmt: skip
        row(f"ext_proc p99 / max ms, {label}", lambda r, n=name: _window_cell(r["windows"].get(n)))
    most = max(r["targets"] for r in results)
    largest = [r for r in results if r["targets"] == most]
    runs = (
        f" ({len(largest)} runs, each figure in run order; met only when met in every run)" if len(largest) > 1 else ""
    )
    lines += ["", f"Issue 14's targets at N = {most:,}{runs}:", "", "| target | measured | |", "|---|---|---|"]
    per_run = [_targets_met(r) for r in largest]
    for row_index, (what, _, _) in enumerate(per_run[0]):
        measured = "; ".join(rows[row_index][1] for rows in per_run)
        met = all(rows[row_index][2] for rows in per_run)
        lines.append(f"| {what} | {measured} | {'met' if met else '**not met**'} |")
    if before is not None:
        lines += ["", *_before_after(before[0], largest[0], before[1])]
    lines += ["", FINDINGS.read_text().strip(), "", "Every window, as the benchmark prints it:", ""]
    for result in results:
        lines += ["```", render(result), "```", ""]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def keep_section(old: str, new: str) -> str:
    """`new` with the scale section of `old` (if any) in place of its own, or appended."""
    start, end = old.find(SECTION_START), old.find(SECTION_END)
    if start < 0 or end < 0:
        return new
    return replace_section(new, old[start : end + len(SECTION_END)] + "\n")


def replace_section(text: str, section: str) -> str:
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start < 0 or end < 0:
        return text.rstrip("\n") + "\n\n" + section
    return text[:start] + section + text[end + len(SECTION_END) :].lstrip("\n")
