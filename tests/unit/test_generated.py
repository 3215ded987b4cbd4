"""Generated code is current: the committed KEDA stubs equal a fresh `make protos`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_protos_match_a_fresh_generation(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "protos" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_protos"] = module
    spec.loader.exec_module(module)
    fresh = module.generate(tmp_path)
    for name in module.OUTPUTS:
        committed = (ROOT / "extproc" / "_proto" / name).read_text()
        assert (fresh / name).read_text() == committed, f"extproc/_proto/{name} is stale: run `make protos`"
