"""The local provider's config file: HTTPScaledObjects + LocalWorkloads, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.core.httpso import TargetKey
from extproc.providers.local.config import ConfigError, load, parse

GOOD = """
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {name: app}
spec:
  hosts: [app.localhost]
  scaleTargetRef: {name: app-deploy, service: app, port: 8080}
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {name: app-deploy}
spec:
  command: [python3, -m, http.server, "{port}"]
  portRange: 18000-18003
  env: {GREETING: hi}
  readinessProbe: {tcpSocket: {}, periodSeconds: 0.05, initialDelaySeconds: 0.1}
"""


def test_good_config() -> None:
    config = parse(GOOD)
    [target] = config.targets
    workload = config.workload_for(target)
    assert workload is not None
    assert workload.key == TargetKey("default", "app-deploy")
    assert workload.argv(18001) == ["python3", "-m", "http.server", "18001"]
    assert list(workload.ports) == [18000, 18001, 18002, 18003]
    assert workload.readiness.http_path is None
    assert workload.readiness.period == 0.05
    assert workload.env == {"GREETING": "hi"}
    assert any("replicas.max 100 exceeds the 4 port(s)" in p for p in config.problems)


def test_broken_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "zerohop.yaml"
    path.write_text("apiVersion: v1\nkind: [unclosed\n")
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}:3:1: not valid YAML")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(Path("/nonexistent/zerohop.yaml"))


def test_invalid_documents_are_reported_and_left_out() -> None:
    broken = (
        GOOD
        + """
---
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {name: bad}
spec:
  scaleTargetRef: {name: app-deploy, service: app}
---
kind: Deployment
metadata: {name: what}
---
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {name: orphan}
spec:
  scaleTargetRef: {name: nothing-runs-me, service: x, port: 1}
"""
    )
    config = parse(broken, "cfg.yaml")
    assert [t.key.name for t in config.targets] == ["app"]
    problems = "\n".join(config.problems)
    assert "cfg.yaml: document 3 (HTTPScaledObject bad): spec.scaleTargetRef: one of port or portName" in problems
    assert "document 4 (Deployment what): kind: expected HTTPScaledObject or LocalWorkload" in problems
    assert "HTTPScaledObject default/orphan: no LocalWorkload default/nothing-runs-me" in problems


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("command: []\n  port: 1", "spec.command: expected a non-empty list"),
        ("command: [x]", "spec: set exactly one of port or portRange"),
        ("command: [x]\n  portRange: 20-10", "spec.portRange: expected 1 <= FIRST <= LAST"),
        ("command: [x]\n  port: 1\n  readinessProbe: {httpGet: {path: nope}}", "httpGet.path: must start with '/'"),
        ("command: [x]\n  port: 1\n  readinessProbe: {periodSeconds: -1}", "periodSeconds: expected a number"),
    ],
)
def test_invalid_workloads(spec: str, message: str) -> None:
    text = f"apiVersion: zerohop.dev/v1alpha1\nkind: LocalWorkload\nmetadata: {{name: w}}\nspec:\n  {spec}\n"
    with pytest.raises(ConfigError) as raised:
        parse(text + "---\n" + GOOD.split("---")[0])
    assert message in str(raised.value)


def test_nothing_usable_is_an_error_with_every_reason() -> None:
    with pytest.raises(ConfigError) as raised:
        parse("kind: Nope\n---\n- a list\n")
    assert "no usable HTTPScaledObject" in str(raised.value)
    assert "document 2: expected a mapping" in str(raised.value)
