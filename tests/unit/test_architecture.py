"""The rooms of `extproc/` and which way their imports may point.

Dependencies point inward. The core imports only the standard library and itself: no gRPC, no Envoy or KEDA
protos, no Kubernetes, no provider; it reaches providers through the interface it defines
(`extproc.core.provider`). The Envoy side and the KEDA side build on the core and not on each other; providers
build on the core and the Envoy side; observability, the developer tools and the application sit on top.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "extproc"

# room -> the rooms (besides itself) it may import; "" is the package root (`__version__`), "_proto" the
# generated KEDA and peer stubs.
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "envoy": {"core"},
    "keda": {"core", "_proto"},
    "providers": {"core", "envoy"},
    "observability": {"core", "envoy", "keda", "providers"},
    "dev": {"core", "envoy", "providers"},
    "app": {"core", "envoy", "keda", "providers", "observability", "dev", "_proto"},
}
MAY_IMPORT[""] = {*MAY_IMPORT["app"], "app"}  # `python -m extproc`
# Third-party packages a room may import beyond the standard library; the Kubernetes client (and orjson, which
# decodes what the API server sends) only in its provider.
THIRD_PARTY: dict[str, set[str]] = {
    "core": set(),
    "envoy": {"grpc", "aiohttp", "yaml", "envoy", "google"},
    "keda": {"grpc", "google"},
    "providers": {"aiohttp", "yaml"},
    "observability": {"aiohttp", "opentelemetry", "envoy"},
    "dev": {"aiohttp", "envoy"},
    "app": {"grpc", "yaml", "aiohttp", "uvloop"},
    "": set(),
}
KUBERNETES_PROVIDER = "providers/kubernetes"


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_proto" not in p.parts)


def room_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "extproc":
                names.update(f"extproc.{alias.name}" for alias in node.names if not alias.name.startswith("__"))
    return names


def violations(path: Path) -> list[str]:
    room = room_of(path)
    relative = path.relative_to(PACKAGE).as_posix()
    found = []
    for name in sorted(imported_modules(path)):
        parts = name.split(".")
        if parts[0] == "extproc":
            if len(parts) == 1:
                continue  # `from extproc import __version__`
            target = parts[1]
            if target != room and target not in MAY_IMPORT[room]:
                found.append(f"{relative} ({room}) imports {name} ({target})")
            elif room == target == "providers" and len(parts) > 2 and parts[2] != path.relative_to(PACKAGE).parts[1]:
                found.append(f"{relative}: one provider imports another ({name})")
        elif parts[0] in ("kubernetes", "orjson"):
            if not relative.startswith(KUBERNETES_PROVIDER):
                found.append(f"{relative} imports {parts[0]} outside the Kubernetes provider")
        elif parts[0] not in {*sys.stdlib_module_names, "__future__", *THIRD_PARTY[room]}:
            found.append(f"{relative} ({room}) imports {name}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_module_imports_only_rooms_below_its_own(path: Path) -> None:
    assert violations(path) == []


def test_every_module_lives_in_a_room() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "__main__.py"}]
    assert loose == []
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"_proto"}
    assert rooms == set(MAY_IMPORT) - {""}


def test_the_package_map_names_every_room_once() -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text())) or ""
    listed = [line.split("`")[1] for line in doc.splitlines() if line.startswith("- `")]
    assert sorted(listed) == sorted(set(MAY_IMPORT) - {""})


def test_the_check_sees_each_kind_of_violation(tmp_path: Path) -> None:
    core = tmp_path / "extproc" / "core"
    core.mkdir(parents=True)
    bad = core / "bad.py"
    bad.write_text("import grpc\nfrom extproc.providers.local import config\nfrom extproc import metrics\n")
    envoy = tmp_path / "extproc" / "envoy"
    envoy.mkdir()
    sideways = envoy / "sideways.py"
    sideways.write_text("from extproc.keda import scaler\nimport kubernetes\n")
    local = tmp_path / "extproc" / "providers" / "local"
    local.mkdir(parents=True)
    across = local / "across.py"
    across.write_text("from extproc.providers.kubernetes import api\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "extproc"
    try:
        assert violations(bad) == [
            "core/bad.py (core) imports extproc.metrics (metrics)",
            "core/bad.py (core) imports extproc.providers.local (providers)",
            "core/bad.py (core) imports grpc",
        ]
        assert violations(sideways) == [
            "envoy/sideways.py (envoy) imports extproc.keda (keda)",
            "envoy/sideways.py imports kubernetes outside the Kubernetes provider",
        ]
        assert violations(across) == [
            "providers/local/across.py: one provider imports another (extproc.providers.kubernetes)"
        ]
    finally:
        PACKAGE = saved
