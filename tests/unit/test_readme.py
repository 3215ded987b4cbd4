"""The commands the README and docs/ tell people to run exist, with the flags they use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from extproc.app import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = ("serve", "demo", "envoy-bootstrap", "envoyfilter", "status", "version")
# `zerohop COMMAND ...` up to the end of its inline code span or line; an output line ("zerohop status: ...")
# is not a command.
INVOCATION = re.compile(r"zerohop (" + "|".join(COMMANDS) + r")(?![\w:-])([^`\n#|]*)")


def command_help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    if command == "version":
        return ""
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return capsys.readouterr().out


def invocations() -> list[tuple[str, str, str]]:
    found = []
    for path in DOCS:
        for match in INVOCATION.finditer(path.read_text()):
            found.append((path.name, match.group(1), match.group(2)))
    return found


def test_the_docs_invoke_zerohop() -> None:
    assert {command for _, command, _ in invocations()} >= {"serve", "envoy-bootstrap", "envoyfilter", "status"}


@pytest.mark.parametrize(
    ("doc", "command", "rest"), invocations(), ids=lambda v: v if isinstance(v, str) and len(v) < 30 else ""
)
def test_every_documented_flag_exists(doc: str, command: str, rest: str, capsys: pytest.CaptureFixture[str]) -> None:
    known = set(re.findall(r"--[a-z][a-z-]*", command_help(command, capsys)))
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
        assert flag in known, f"{doc}: `zerohop {command}` has no {flag}"


def test_every_documented_make_target_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"(?:`|^)make ([a-z][a-z-]*)", readme, re.MULTILINE))
    assert documented >= {"demo", "test"}
    assert documented <= targets, f"README cites make targets the Makefile lacks: {documented - targets}"


def test_the_test_command_states_its_prerequisites() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("make test   #") :][:1500]
    assert "Python 3.11+" in section
    assert "root" in section
    assert "make tools" in section
