"""The local provider's config file: HTTPScaledObjects + LocalWorkloads, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.core.httpso import TargetKey
from extproc.envoy.config import route_configuration
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
    assert any("replicas.max 100 exceeds the 4 port(s)" in str(p) for p in config.problems)


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
    problems = "\n".join(map(str, config.problems))
    assert "cfg.yaml: document 3 (HTTPScaledObject bad): spec.scaleTargetRef: one of port or portName" in problems
    assert (
        "document 4 (Deployment what): kind: expected one of HTTPScaledObject, InterceptorRoute, ScaledObject, "
        "LocalWorkload" in problems
    )
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


def test_unknown_fields_are_rejected_with_the_nearest_valid_name() -> None:
    typo = GOOD.replace("hosts: [app.localhost]", "host: [app.localhost]").replace("portRange:", "portRang:")
    with pytest.raises(ConfigError) as raised:
        parse(typo, "cfg.yaml")
    message = str(raised.value)
    assert "cfg.yaml: document 1 (HTTPScaledObject app): spec.host: unknown field; did you mean hosts?" in message
    assert "cfg.yaml: document 2 (LocalWorkload app-deploy): spec.portRang: unknown field; did you mean portRange?" in (
        message
    )


def test_a_broken_document_keeps_its_last_good_version_on_reload() -> None:
    other = GOOD.split("---")[0].replace("name: app}", "name: other}").replace("app.localhost", "other.localhost")
    previous = parse(GOOD + "---" + other)
    assert sorted(t.key.name for t in previous.targets) == ["app", "other"]
    broken = other.replace("hosts: [other.localhost]", "host: [other.localhost]")
    config = parse(GOOD + "---" + broken, "cfg.yaml", previous)
    assert sorted(t.key.name for t in config.targets) == ["app", "other"]
    assert config.by_key[TargetKey("default", "other")].hosts == ("other.localhost",)
    assert config.kept == (TargetKey("default", "other"),)
    [problem] = [p for p in config.problems if p.severity == "error"]
    assert (problem.source, problem.document, problem.kind, problem.name) == (
        "cfg.yaml",
        3,
        "HTTPScaledObject",
        "other",
    )
    assert problem.message.endswith("did you mean hosts?; keeping its last good version")
    # Without a previous version (first load) the broken target is left out.
    assert [t.key.name for t in parse(GOOD + "---" + broken).targets] == ["app"]


def test_a_broken_workload_keeps_its_last_good_version_on_reload() -> None:
    previous = parse(GOOD)
    broken = GOOD.replace("portRange: 18000-18003", "portRange: 18003-18000")
    config = parse(broken, "cfg.yaml", previous)
    [target] = config.targets
    workload = config.workload_for(target)
    assert workload is not None
    assert list(workload.ports) == [18000, 18001, 18002, 18003]


def test_an_unidentifiable_broken_document_removes_nothing_on_reload() -> None:
    previous = parse(GOOD)
    config = parse(GOOD.replace("kind: HTTPScaledObject", "kind: HTTPScaledObjct"), "cfg.yaml", previous)
    assert [t.key.name for t in config.targets] == ["app"]


def test_an_empty_file_says_so() -> None:
    assert parse("").empty
    assert parse("# nothing yet\n").empty
    assert not parse(GOOD).empty


ROUTE = """
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {name: app}
spec:
  target: {service: app, port: 8080}
  rules:
    - hosts: [app.localhost]
      paths: [{value: /api}]
    - hosts: [admin.localhost]
  scalingMetric:
    concurrency: {targetValue: 5}
    requestRate: {targetValue: 50}
"""
ROUTE_SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: app-so}
spec:
  scaleTargetRef: {name: app-deploy}
  minReplicaCount: 1
  maxReplicaCount: 3
  cooldownPeriod: 30
  triggers:
    - type: external-push
      metadata: {scalerAddress: "127.0.0.1:9090", interceptorRoute: app}
"""
WORKLOAD = "---" + GOOD.split("---")[1]


def test_an_interceptor_route_runs_the_workload_its_scaled_object_names() -> None:
    config = parse(ROUTE + "---" + ROUTE_SCALED_OBJECT + WORKLOAD)
    assert config.problems == ()
    [target] = config.targets
    assert (target.kind, target.key) == ("InterceptorRoute", TargetKey("default", "app"))
    assert len(target.rules) == 2
    assert len(target.scaling_metrics) == 2
    assert (target.scale_target.name, target.min_replicas, target.max_replicas, target.scaledown_period) == (
        "app-deploy",
        1,
        3,
        30,
    )
    workload = config.workload_for(target)
    assert workload is not None
    assert workload.key == TargetKey("default", "app-deploy")


def test_a_route_no_scaled_object_names_runs_the_workload_of_its_own_name() -> None:
    config = parse(ROUTE + WORKLOAD.replace("name: app-deploy", "name: app"))
    [target] = config.targets
    assert (target.scale_target.name, target.min_replicas, target.max_replicas) == ("app", 0, 100)


def test_route_problems_name_the_route_and_the_scaled_object() -> None:
    orphan = ROUTE_SCALED_OBJECT.replace("interceptorRoute: app", "interceptorRoute: gone")
    config = parse(ROUTE + "---" + orphan + WORKLOAD.replace("name: app-deploy", "name: app"))
    assert "<config>: ScaledObject default/app-so: names InterceptorRoute default/gone, which is not in the file" in [
        str(p) for p in config.problems
    ]
    twice = ROUTE_SCALED_OBJECT.replace("name: app-so", "name: other-so")
    config = parse(
        GOOD
        + "---"
        + ROUTE.replace("name: app", "name: route")
        + "---"
        + ROUTE_SCALED_OBJECT.replace("interceptorRoute: app", "interceptorRoute: route")
        + "---"
        + twice.replace("interceptorRoute: app", "interceptorRoute: route")
    )
    assert [t.key.name for t in config.targets] == ["app"]
    assert any(
        "named by several ScaledObjects (default/app-so, default/other-so); left out" in str(p) for p in config.problems
    )


def test_a_route_and_an_httpscaledobject_share_names() -> None:
    config = parse(GOOD + "---" + ROUTE)
    assert [t.kind for t in config.targets] == ["HTTPScaledObject"]
    assert [p.message for p in config.problems if p.severity == "error"] == [
        "duplicate InterceptorRoute default/app (HTTPScaledObjects and InterceptorRoutes share names)"
    ]


def test_an_invalid_route_names_the_field() -> None:
    broken = ROUTE.replace("hosts: [admin.localhost]", "hosts: [admin.localhost]\n      host: [x]")
    with pytest.raises(ConfigError) as raised:
        parse(broken + WORKLOAD)
    assert "document 1 (InterceptorRoute app): spec.rules[1].host: unknown field; did you mean hosts?" in str(
        raised.value
    )


def canary(weight_v1: str | None, weight_v2: str | None) -> str:
    documents = []
    for name, weight in (("v1", weight_v1), ("v2", weight_v2)):
        annotations = "" if weight is None else f", annotations: {{zerohop.dev/weight: {weight!r}}}"
        documents.append(f"""
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: {name}{annotations}}}
spec:
  hosts: [backend.localhost]
  scaleTargetRef: {{name: {name}, service: {name}, port: 8080}}
  replicas: {{min: 0, max: 2}}
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {{name: {name}}}
spec:
  command: [python3, -m, http.server, "{{port}}"]
  portRange: 18000-18001
""")
    return "---".join(documents)


def test_a_canary_with_a_weight_on_each_version_loads_without_problems() -> None:
    config = parse(canary("80", "20"))
    assert [t.key.name for t in config.targets] == ["v1", "v2"]
    assert config.problems == ()


def test_a_shared_match_without_weights_says_which_target_takes_it() -> None:
    config = parse(canary("80", None))
    [problem] = config.problems
    assert problem.severity == "warning"
    assert str(problem) == (
        "<config>: HTTPScaledObject default/v1: shares host backend.localhost path / with default/v2, but not "
        "every one has a zerohop.dev/weight annotation: it takes all of those requests (set zerohop.dev/weight "
        "on each to split them)"
    )
    [zero] = parse(canary("0", "0")).problems
    assert "the weights sum to 0" in zero.message


@pytest.mark.parametrize("weight", ["-1", "eighty", "0.5", "1000001", ""])
def test_a_weight_that_is_not_an_integer_rejects_the_document(weight: str) -> None:
    config = parse(canary("80", weight))
    assert [t.key.name for t in config.targets] == ["v1"]
    [problem] = [p for p in config.problems if p.severity == "error"]
    assert problem.document == 3
    assert "metadata.annotations[zerohop.dev/weight]: expected an integer 0..1000000" in problem.message


def test_an_interceptor_route_can_be_a_canary_version_of_an_httpscaledobject() -> None:
    canary_route = """
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {name: v3, annotations: {zerohop.dev/weight: "10"}}
spec:
  target: {service: v3, port: 8080}
  rules: [{hosts: [backend.localhost]}]
  scalingMetric: {requestRate: {targetValue: 50}}
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {name: v3}
spec:
  command: [python3, -m, http.server, "{port}"]
  portRange: 18000-18099
"""
    config = parse(canary("90", "0") + "---" + canary_route)
    assert config.problems == ()
    [vhost] = [v for v in route_configuration(config.targets)["virtual_hosts"] if v["domains"] == ["backend.localhost"]]
    [route] = vhost["routes"]
    weights = {
        c["name"].split("|")[3].split(".")[0]: c["weight"] for c in route["route"]["weighted_clusters"]["clusters"]
    }
    assert weights == {"v1": 90, "v2": 0, "v3": 10}
