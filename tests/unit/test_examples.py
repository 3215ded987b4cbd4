"""Every file in examples/ is a working config, and every examples/ path the CLI cites exists."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from extproc.app import cli
from extproc.core import httpso
from extproc.providers.local import config as local_config
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
LOCAL = [path for path in sorted(EXAMPLES.glob("*.yaml")) if "kind: LocalWorkload" in path.read_text()]
KUBERNETES = [path for path in sorted(EXAMPLES.glob("*.yaml")) if path not in LOCAL]


def test_there_are_examples_for_both_providers() -> None:
    assert [p.name for p in LOCAL] == ["local.yaml"]
    assert KUBERNETES


@pytest.mark.parametrize("path", LOCAL, ids=lambda p: p.name)
def test_local_examples_load_without_a_problem(path: Path) -> None:
    loaded = local_config.load(path)
    assert loaded.targets
    assert loaded.problems == ()


@pytest.mark.parametrize("path", LOCAL, ids=lambda p: p.name)
def test_local_example_replicas_serve(path: Path) -> None:
    loaded = local_config.load(path)
    workload = loaded.workload_for(loaded.targets[0])
    assert workload is not None
    assert workload.working_dir is not None
    port = free_port()
    # The command as written, on this interpreter (the example says `python3`, whatever that is on PATH).
    argv = [sys.executable if part == "python3" else part for part in workload.argv(port)]
    process = subprocess.Popen(argv, cwd=path.parent / workload.working_dir, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the example's replica exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the example's replica never answered"
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_kubernetes_examples_are_valid_httpscaledobjects_with_hosts(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents
    for document in documents:
        assert document["kind"] == httpso.KIND
        assert httpso.parse(document).hosts


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_kubernetes_examples_scope_an_envoyfilter(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["envoyfilter", str(path)]) == 0
    assert "kind: EnvoyFilter" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["serve", "envoy-bootstrap", "envoyfilter", "status"])
def test_the_examples_the_cli_cites_exist(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    for name in re.findall(r"examples/[\w./-]+", capsys.readouterr().out):
        assert (ROOT / name).is_file(), f"`zerohop {command} --help` cites {name}, which does not exist"


def test_serve_help_cites_the_local_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    assert "examples/local.yaml" in capsys.readouterr().out
