"""Prometheus text format read back, for tests that check what /metrics served."""

from __future__ import annotations


def parse(text: str) -> dict[str, float]:
    """Samples as {'name{labels}': value}, the labels exactly as written; comments and blank lines skipped."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
