"""Generate extproc/_proto from protos/*.proto (`make protos`); tests call `generate()` to detect staleness.

The proto's import path is mapped to `extproc/_proto/` so the generated modules import each other as
`extproc._proto.*`. Needs the dev extra (grpcio-tools, mypy-protobuf at pinned versions).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = "extproc/_proto"
PROTOS_FILES = ("externalscaler", "peers")
OUTPUTS = tuple(f"{name}{suffix}" for name in PROTOS_FILES for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"))


def generate(out_root: Path) -> Path:
    """Write the generated files under `out_root/extproc/_proto`; returns that directory."""
    from grpc_tools import protoc

    (out_root / PACKAGE).mkdir(parents=True, exist_ok=True)
    plugin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--proto_path={PACKAGE}={PROTOS}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(f"{PACKAGE}/{name}.proto" for name in PROTOS_FILES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    return out_root / PACKAGE


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        for name in OUTPUTS:
            shutil.copyfile(generated / name, ROOT / PACKAGE / name)
            print(f"wrote {PACKAGE}/{name}")


if __name__ == "__main__":
    main()
