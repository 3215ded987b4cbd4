"""Dependencies point inward: the core imports only the standard library and other core modules, never gRPC,
Envoy or KEDA protos, Kubernetes, or a provider; it reaches providers through the interface it defines."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "extproc"
CORE = {"httpso", "durations", "routing", "traffic", "coldstart", "activation", "targets", "core"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_module_imports_only_stdlib_and_core(module: str) -> None:
    for name in imported_modules(PACKAGE / f"{module}.py"):
        top = name.split(".")[0]
        if top == "extproc":
            assert name.removeprefix("extproc.") in CORE, f"extproc.{module} imports {name}, outside the core"
        else:
            assert top in sys.stdlib_module_names or top == "__future__", f"extproc.{module} imports {name}"


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import grpc\nfrom extproc.providers.local import config\n")
    assert imported_modules(bad) == {"grpc", "extproc.providers.local"}
