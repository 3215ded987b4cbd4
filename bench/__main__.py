"""`python -m bench`: parse the options, run the benchmark, save its JSON and regenerate the report."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from bench import report, scale_report
from bench.procs import PROJECT_ROOT
from bench.runner import Options, merge_partial, run
from bench.setups import ALL_SETUPS

RESULTS = PROJECT_ROOT / "bench" / "results"
REPORT = PROJECT_ROOT / "docs" / "performance.md"
COLD = "cold"


def parser() -> argparse.ArgumentParser:
    defaults = Options()
    root = argparse.ArgumentParser(
        prog="python -m bench",
        description="zerohop's side-by-side benchmark: plain gateway (A), gateway + zerohop (B), an extra Envoy "
        "hop (C), bare Python ext_proc servers naive (D), tuned (E) and tuned on gRPC's defaults (F), gateway + "
        "zerohop with the warm path open (G), interleaved round by round; a paired "
        "low-rate load over all of them at once; zerohop's own work per request in-process; then zerohop's "
        "cold-start overhead, confirmed through the gateway's admin API and through gateway pod stats (Istio). "
        "Saves bench/results/<date>.json and regenerates docs/performance.md.",
    )
    root.add_argument("--rounds", type=int, default=defaults.rounds, help=f"rounds (default {defaults.rounds})")
    root.add_argument(
        "--duration", type=int, default=defaults.duration, help=f"seconds per load run (default {defaults.duration})"
    )
    root.add_argument(
        "--only",
        default=",".join([*ALL_SETUPS, COLD]),
        help="comma-separated setups to run, of A,B,C,D,E,F and cold (both cold-start paths; default all)",
    )
    root.add_argument(
        "--cold-samples", type=int, default=defaults.cold_samples, help=f"cold starts (default {defaults.cold_samples})"
    )
    root.add_argument(
        "--connections", type=int, default=defaults.connections, help="wrk connections at saturation (default 32)"
    )
    root.add_argument("--rate", type=int, default=defaults.rate, help="requests/s of the fixed-rate run (default 200)")
    root.add_argument(
        "--pin",
        choices=["split", "loadgen", "none"],
        default=defaults.pin,
        help="loadgen: wrk pinned to the last CPU, servers free (default); split: wrk on the last CPU, every "
        "server on the others; none",
    )
    root.add_argument(
        "--paired-rate",
        type=int,
        default=defaults.paired_rate,
        help="ticks per second of the paired low-rate load, each one request to every setup in turn "
        f"(default {defaults.paired_rate})",
    )
    root.add_argument(
        "--retries",
        type=int,
        default=defaults.retries,
        help="repeat a measurement up to N times when something outside the bench was busy during it "
        f"(default {defaults.retries}; at most 15%% of all measurements are repeated)",
    )
    root.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 round of 2s, 3 cold starts; the JSON goes to the work directory and the report to "
        "stdout, leaving bench/results and docs/performance.md alone",
    )
    root.add_argument("--report-only", type=Path, metavar="JSON", help="only regenerate the report from a saved run")
    root.add_argument(
        "--merge-into",
        type=Path,
        metavar="JSON",
        help="with --only cold: write this run's cold-start sections into a saved run's JSON instead of a new "
        "file (the figures they replace, the command, date and machine are kept there under `partial_runs`) "
        "and regenerate the report from it; the rest of that run is left as it was",
    )
    root.add_argument(
        "--results-dir", type=Path, default=RESULTS, help=f"where to save the run's JSON (default {RESULTS})"
    )
    root.add_argument("--report", type=Path, default=REPORT, help=f"where to write the report (default {REPORT})")
    return root


def options_from(args: argparse.Namespace, argv: list[str]) -> Options:
    selected = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in selected if part not in (*ALL_SETUPS, COLD)]
    if unknown:
        raise SystemExit(f"python -m bench: --only: unknown {', '.join(unknown)} (use A,B,C,D,E,F,cold)")
    setups = tuple(key for key in ALL_SETUPS if key in selected)
    cold = args.cold_samples if COLD in selected else 0
    options = Options(
        rounds=args.rounds,
        duration=args.duration,
        setups=setups,
        cold_samples=cold,
        connections=args.connections,
        rate=args.rate,
        paired_rate=args.paired_rate,
        pin=args.pin,
        retries=args.retries,
        command=" ".join(["python -m bench", *argv]),
    )
    if args.quick:
        options = Options(
            rounds=1,
            duration=2,
            warmup=1,
            idle=1,
            setups=setups,
            cold_samples=min(cold, 3),
            connections=args.connections,
            rate=args.rate,
            paired_rate=args.paired_rate,
            pin=args.pin,
            retries=args.retries,
            quick=True,
            command=options.command,
        )
    return options


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def write_report(document: dict[str, Any], json_path: Path, destination: Path | None) -> None:
    text = report.render(document, _relative(json_path))
    if destination is None:
        print(text)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        text = scale_report.keep_section(destination.read_text(), text)  # written by `python -m bench.scale --report`
    destination.write_text(text)
    print(f"report: {_relative(destination)}", file=sys.stderr)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _run_cancellable(options: Options) -> dict[str, Any]:
    # SIGINT (Ctrl-C) and SIGTERM cancel the run; every child is stopped on the way out. Handled here rather
    # than left to KeyboardInterrupt, which is not raised when SIGINT was ignored at start (`nohup`, `&`).
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    return await run(options, _progress)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.report_only is not None:
        document = json.loads(args.report_only.read_text())
        write_report(document, args.report_only, args.report)
        return 0
    options = options_from(args, argv)
    if args.merge_into is not None and (options.setups or not options.cold_samples or options.quick):
        print("python -m bench: --merge-into takes a cold-start run only (--only cold, no --quick)", file=sys.stderr)
        return 2
    if args.merge_into is not None and not args.merge_into.is_file():
        print(f"python -m bench: --merge-into: no such file {args.merge_into}", file=sys.stderr)
        return 2
    if options.setups and shutil.which("wrk") is None:
        print("python -m bench: wrk is not installed (apt-get install wrk, or `make bench`)", file=sys.stderr)
        return 2
    try:
        document = asyncio.run(_run_cancellable(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("python -m bench: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    if args.merge_into is not None:
        merged = merge_partial(json.loads(args.merge_into.read_text()), document)
        args.merge_into.write_text(json.dumps(merged, indent=1) + "\n")
        print(f"results: merged into {_relative(args.merge_into)}", file=sys.stderr)
        write_report(merged, args.merge_into, args.report)
        return 0
    stamp = datetime.datetime.fromisoformat(document["started"]).strftime("%Y-%m-%dT%H-%M-%SZ")
    if options.quick:
        json_path = Path(document["workdir"]) / f"{stamp}-quick.json"
    else:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        json_path = args.results_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"results: {_relative(json_path)}", file=sys.stderr)
    quick_destination = args.report if args.report != REPORT else None
    write_report(document, json_path, quick_destination if options.quick else args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
