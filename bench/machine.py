"""Facts about the machine and software a run was measured on, and how busy the CPUs were otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

from extproc.dev.envoyproc import envoy_binary


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _envoy_version() -> str:
    result = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True, check=False)
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    text = result.stdout.strip().split("version:", 1)[-1].strip()
    parts = text.split("/")
    return f"{parts[1]} ({'/'.join(parts[2:])}, {parts[0][:12]})" if len(parts) > 2 else text


def _tool_version(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def facts() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "envoy": _envoy_version(),
        "python": sys.version.split()[0],
        "grpcio": _package("grpcio"),
        "uvloop": _package("uvloop"),
        "protobuf": _package("protobuf"),
        "wrk": _tool_version(["wrk", "--version"]).split(" Copyright")[0],
    }


def cpu_times() -> tuple[float, float]:
    """(busy, total) seconds of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / ticks, total / ticks


def busy_percent(seconds: float = 2.0) -> float:
    """How busy all CPUs were over the next `seconds` (100 = every core fully busy)."""
    busy_before, total_before = cpu_times()
    time.sleep(seconds)
    busy_after, total_after = cpu_times()
    return round(100 * (busy_after - busy_before) / max(total_after - total_before, 1e-9), 1)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]
