"""The `zerohop` command's own checks: what it refuses, with which message and exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from extproc.app import cli

ROOT = Path(__file__).resolve().parents[2]

HTTPSO = """\
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: app}}
spec:
  {hosts}
  scaleTargetRef: {{name: app, service: app, port: 8080}}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("", id="empty file"),
        pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {}\n", id="a ConfigMap"),
        pytest.param(HTTPSO.format(hosts="host: [app.example.com]"), id="the host: typo"),
    ],
)
def test_envoyfilter_refuses_files_that_name_no_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "httpso.yaml"
    path.write_text(content)
    code, out, err = run(capsys, "envoyfilter", str(path))
    assert (code, out) == (2, "")
    assert err.splitlines()[-1].startswith("zerohop: ")


def test_envoyfilter_without_a_host_names_the_way_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "httpso.yaml"
    path.write_text("")
    code, _, err = run(capsys, "envoyfilter", str(path))
    assert code == 2
    assert f"no host found in {path}" in err
    assert "--allow-empty" in err
    code, out, _ = run(capsys, "envoyfilter", "--allow-empty", str(path))
    assert code == 0
    assert "kind: EnvoyFilter" in out


def test_envoyfilter_scoped_to_named_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "httpso.yaml"
    path.write_text(HTTPSO.format(hosts="hosts: [app.example.com]"))
    code, out, _ = run(capsys, "envoyfilter", str(path))
    assert code == 0
    assert "app.example.com:80" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gateway-name", "public", "--selector", "app=gw"], "--gateway-name and --selector"),
        (["--ports", "abc"], "--ports: expected ports 1..65535"),
        (["--ports", "80,99999"], "--ports: expected ports 1..65535"),
        (["--namespace", "Zero_Hop"], "--namespace: expected a Kubernetes namespace"),
        (["--gateway-namespace", ""], "--gateway-namespace: expected a Kubernetes namespace"),
        (["--hold-timeout", "soon"], "--hold-timeout: not a duration"),
        (["--hold-timeout", "-5s"], "--hold-timeout: must be > 0, got '-5s'"),
        (["--hold-timeout", "0"], "--hold-timeout: must be > 0"),
    ],
)
def test_envoyfilter_options_are_checked_as_serve_checks_them(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "envoyfilter", *argv)
    assert (code, out) == (2, "")
    assert message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-held-total", "abc"], "--max-held-total: expected a whole number, got 'abc'"),
        (["--gateway-ports", "abc"], "--gateway-ports: expected ports 1..65535"),
        (["--gateway-stats-port", "x"], "--gateway-stats-port: expected a whole number"),
        (["--hold-timeout", "-5s"], "--hold-timeout: must be > 0, got '-5s'"),
        (["--hold-timeout=-5s"], "--hold-timeout: must be > 0, got '-5s'"),
        (["--pod-namespace", "Not/A/Namespace"], "--pod-namespace: expected a Kubernetes namespace"),
    ],
)
def test_serve_errors_are_one_clear_line(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "serve", *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"zerohop: {message}")
    assert err.count("\n") == 1, err


def test_bootstrap_checks_its_hold_timeout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "envoy-bootstrap", "--xds-dir", str(tmp_path), "--hold-timeout", "-1s")
    assert (code, out) == (2, "")
    assert "--hold-timeout: must be > 0" in err


def test_a_missing_config_is_reported_before_anything_starts(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROHOP_")}
    env |= {"PYTHONPATH": str(ROOT), "ZEROHOP_HOLD_TIMOUT": "5s"}
    argv = ["serve", "--config", str(missing), "--admin-address", "127.0.0.1:0", "--state-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "extproc", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[-1] == f"zerohop: {missing}: cannot read: No such file or directory"
    assert "ZEROHOP_HOLD_TIMOUT is not a zerohop setting and is ignored; did you mean ZEROHOP_HOLD_TIMEOUT?" in lines[0]
    assert len(lines) == 2, done.stderr  # nothing started, so nothing stopped


def test_envoyfilter_scoped_to_an_interceptor_routes_rule_hosts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "route.yaml"
    path.write_text(
        "apiVersion: http.keda.sh/v1beta1\nkind: InterceptorRoute\nmetadata: {name: shop}\n"
        "spec:\n  target: {service: shop, port: 80}\n  scalingMetric: {concurrency: {}}\n"
        "  rules: [{hosts: [shop.example.com]}, {hosts: [admin.example.com], paths: [{value: /x}]}]\n"
    )
    code, out, _ = run(capsys, "envoyfilter", str(path))
    assert code == 0
    assert "shop.example.com:80" in out
    assert "admin.example.com:80" in out


SIDECAR_HTTPSO = """\
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.example.com]
  scaleTargetRef: {{name: {name}, service: {name}, {port}}}
"""


def test_envoyfilter_sidecar_is_scoped_to_the_targets_service_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "httpso.yaml"
    path.write_text(
        SIDECAR_HTTPSO.format(name="backend", port="port: 8080")
        + "---\n"
        + SIDECAR_HTTPSO.format(name="named", port="portName: http")
    )
    code, out, err = run(capsys, "envoyfilter", "--sidecar", "--workload-selector", "app=frontend", str(path))
    assert code == 0
    document = yaml.safe_load(out)
    assert document["metadata"]["namespace"] == "istio-system"
    assert document["metadata"]["name"] == "zerohop-ext-proc-sidecar-frontend"  # one per client workload
    assert document["spec"]["workloadSelector"] == {"labels": {"app": "frontend"}}
    patches = document["spec"]["configPatches"]
    assert {p["match"]["context"] for p in patches} == {"SIDECAR_OUTBOUND"}
    assert patches[0]["patch"]["value"]["disabled"] is True
    assert [p["match"]["routeConfiguration"] for p in patches[1:]] == [
        {"vhost": {"name": "backend.shop.svc.cluster.local:8080"}}
    ]
    assert "shop/named" in err
    assert "by name" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sidecar"], "--sidecar needs --workload-selector"),
        (["--sidecar", "--workload-selector", "app"], "--workload-selector: expected KEY=VALUE"),
        (["--sidecar", "--workload-selector", "app=f", "--selector", "istio=x"], "--selector selects gateway pods"),
        (["--sidecar", "--workload-selector", "app=f", "--ports", "80"], "--ports is for gateways"),
        (["--sidecar", "--workload-selector", "app=f", "--workload-namespace", "A_B"], "--workload-namespace: "),
        (["--workload-selector", "app=frontend"], "go with --sidecar"),
    ],
)
def test_envoyfilter_sidecar_options_are_checked(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "envoyfilter", *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_envoyfilter_sidecar_refuses_files_without_a_service_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "httpso.yaml"
    path.write_text(SIDECAR_HTTPSO.format(name="named", port="portName: http"))
    code, out, err = run(capsys, "envoyfilter", "--sidecar", "--workload-selector", "app=frontend", str(path))
    assert (code, out) == (2, "")
    assert "no Service port found" in err


def test_envoyfilter_sidecar_without_files_runs_for_every_outbound_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "envoyfilter", "--sidecar", "--workload-selector", "app=frontend")
    assert code == 0
    [patch] = yaml.safe_load(out)["spec"]["configPatches"]
    assert "disabled" not in patch["patch"]["value"]


def test_envoyfilter_sidecar_carries_the_failover_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "httpso.yaml"
    path.write_text(
        SIDECAR_HTTPSO.format(name="backend", port="port: 8080")
        + "  coldStartTimeoutFailoverRef: {service: fallback, port: 9090}\n"
    )
    code, out, _ = run(capsys, "envoyfilter", "--sidecar", "--workload-selector", "app=frontend", str(path))
    assert code == 0
    [route] = [p for p in yaml.safe_load(out)["spec"]["configPatches"] if p["applyTo"] == "HTTP_ROUTE"]
    assert route["match"]["routeConfiguration"] == {"vhost": {"name": "backend.shop.svc.cluster.local:8080"}}
    assert route["patch"]["operation"] == "INSERT_FIRST"
    assert route["patch"]["value"]["route"]["cluster"] == "outbound|9090||fallback.shop.svc.cluster.local"
