"""InterceptorRoute parsing (the add-on's v1beta1 fields, defaults and rules, errors naming the field), its
routing (several rules, the same matching as an HTTPScaledObject) and the ScaledObject trigger that names it."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.core import iroute
from extproc.core.coldstart import ColdGate
from extproc.core.httpso import HeaderMatch, InvalidSpec, MetricKind, RouteRule, TargetKey
from extproc.core.registry import InFlightMode, TargetRegistry
from extproc.core.routing import RouteTable
from extproc.core.traffic import TrafficSnapshot
from extproc.envoy.config import target_routes
from extproc.observability.admin import target_status
from tests.helpers import route


def document(name: str = "app", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "target": {"service": "app-svc", "port": 8080},
        "rules": [{"hosts": ["app.example.com"]}],
        "scalingMetric": {"concurrency": {"targetValue": 10}},
    }
    body.update(spec)
    return {
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": body,
    }


def scaled_object(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scaleTargetRef": {"name": "app-deploy"},
        "triggers": [
            {"type": "external-push", "metadata": {"scalerAddress": "zerohop:9090", "interceptorRoute": "app"}}
        ],
    }
    body.update(spec)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "app-so", "namespace": "shop"},
        "spec": body,
    }


def test_the_add_on_example_parses_into_a_target_with_no_workload() -> None:
    target = iroute.parse(document(rules=[{"hosts": ["app.example.com"], "paths": [{"value": "/api/"}]}]))
    assert target.key == TargetKey("shop", "app")
    assert target.kind == "InterceptorRoute"
    assert (target.hosts, target.path_prefixes, target.headers, target.rules) == (
        ("app.example.com",),
        ("/api",),
        (),
        (),
    )
    ref = target.scale_target
    assert (ref.name, ref.service, ref.port, ref.port_name) == ("", "app-svc", 8080, None)
    assert target.metric.kind is MetricKind.CONCURRENCY
    assert target.metric.target_value == 10
    assert target.scaling_metrics == (target.metric,)
    assert target.metric_name == "http_app_concurrency"
    assert (target.min_replicas, target.max_replicas, target.failover, target.condition_wait) == (0, 100, None, None)
    assert target.notices() == []


def test_both_metrics_are_kept_and_the_rate_window_is_counted_over() -> None:
    target = iroute.parse(
        document(
            scalingMetric={
                "concurrency": {"targetValue": 50},
                "requestRate": {"targetValue": 200, "window": "30s", "granularity": "500ms"},
            }
        )
    )
    kinds = [(m.kind, m.target_value) for m in target.scaling_metrics]
    assert kinds == [(MetricKind.CONCURRENCY, 50), (MetricKind.REQUEST_RATE, 200)]
    assert (target.metric.kind, target.metric.window, target.metric.granularity) == (MetricKind.REQUEST_RATE, 30, 0.5)


def test_defaults_of_the_crd_for_target_values_window_and_granularity() -> None:
    target = iroute.parse(document(scalingMetric={"requestRate": {}}))
    assert (target.metric.kind, target.metric.target_value) == (MetricKind.REQUEST_RATE, 100)
    assert (target.metric.window, target.metric.granularity) == (60, 1)
    assert iroute.parse(document(scalingMetric={"concurrency": {}})).metric.target_value == 100


def test_a_route_with_no_rules_is_a_catch_all() -> None:
    target = iroute.parse(document(rules=None))
    assert target.catch_all
    assert target.routing_rules == (RouteRule(),)
    assert target.notices() == ["shop/app: no rule with hosts or paths: it matches every host and path"]


def test_several_rules_keep_their_own_hosts_paths_and_headers() -> None:
    target = iroute.parse(
        document(
            rules=[
                {"hosts": ["A.example.com", "*.eu.example.com"], "paths": [{"value": "/api"}]},
                {"paths": [{"value": "/shop"}], "headers": [{"name": "X-Tenant", "value": "blue"}]},
            ]
        )
    )
    assert target.rules == (
        RouteRule(("a.example.com", "*.eu.example.com"), ("/api",)),
        RouteRule((), ("/shop",), (HeaderMatch("x-tenant", "blue"),)),
    )
    # The union, for those that only ask which hosts a target has; `*` because one rule takes every host.
    assert target.hosts == ("a.example.com", "*.eu.example.com", "*")
    assert target.path_prefixes == ("/api", "/shop")
    assert not target.catch_all


def test_routing_follows_each_rule_like_an_httpscaledobject() -> None:
    routes = table(
        iroute.parse(
            document(
                "multi",
                rules=[
                    {"hosts": ["a.example.com"], "paths": [{"value": "/api"}]},
                    {"hosts": ["b.example.com"], "headers": [{"name": "x-tenant", "value": "blue"}]},
                ],
            )
        ),
        iroute.parse(document("other", rules=[{"hosts": ["a.example.com", "b.example.com"]}])),
    )
    assert key(route(routes, b"a.example.com", "/api/v1")) == "multi"
    assert key(route(routes, b"a.example.com", "/apix")) == "other"  # whole segments, as for HTTPScaledObjects
    assert key(route(routes, b"b.example.com", "/", {"x-tenant": "blue"})) == "multi"
    assert key(route(routes, b"b.example.com", "/api", {"x-tenant": "red"})) == "other"
    # A rule's headers belong to that rule alone: host a needs none.
    assert key(route(routes, b"a.example.com:8080", "/api")) == "multi"
    assert route(routes, b"c.example.com") is None


def test_envoy_routes_follow_each_rule() -> None:
    target = iroute.parse(
        document(
            rules=[
                {"hosts": ["a.example.com"], "paths": [{"value": "/api"}]},
                {"hosts": ["b.example.com"], "headers": [{"name": "x-tenant"}]},
            ]
        )
    )
    got = {(spec.host, spec.prefix, spec.headers) for spec in target_routes([target])}
    assert got == {("a.example.com", "/api", ()), ("b.example.com", "/", (("x-tenant", None),))}


def table(*targets: Any) -> RouteTable:
    registry = TargetRegistry(
        ColdGate(max_held_per_target=1, max_held_total=1), hold_timeout=1, in_flight=InFlightMode.ALL
    )
    return RouteTable(registry.sync(targets).values())


def key(state: Any) -> str | None:
    return None if state is None else state.key.name


def test_both_metrics_follow_requests_to_their_end_and_either_makes_it_active() -> None:
    registry = TargetRegistry(
        ColdGate(max_held_per_target=1, max_held_total=1), hold_timeout=30, in_flight=InFlightMode.CONCURRENCY
    )
    both = iroute.parse(document(scalingMetric={"concurrency": {"targetValue": 5}, "requestRate": {"targetValue": 9}}))
    state = registry.upsert(both)
    assert state.follow_end  # in-flight must be exact for the concurrency metric
    rate = registry.upsert(iroute.parse(document("rate", scalingMetric={"requestRate": {"targetValue": 9}})))
    assert not rate.follow_end
    assert state.active(TrafficSnapshot(in_flight=2, held=0, requests=0, rate=0.0))
    assert state.active(TrafficSnapshot(in_flight=0, held=0, requests=3, rate=0.5))
    assert not state.active(TrafficSnapshot(in_flight=0, held=0, requests=0, rate=0.0))


def test_timeouts_and_the_fallback() -> None:
    target = iroute.parse(
        document(
            timeouts={"readiness": "45s", "request": "1m", "responseHeader": "10s"},
            coldStart={"fallback": {"service": "sorry", "portName": "http"}},
        )
    )
    assert (target.condition_wait, target.response_header_timeout) == (45, 10)
    assert target.failover is not None
    assert (target.failover.service, target.failover.port_name, target.failover.timeout_seconds) == (
        "sorry",
        "http",
        45,
    )
    # The request deadline bounds the hold too; 0s means no deadline of its own (the fallback then waits 30s).
    capped = iroute.parse(document(timeouts={"readiness": "0s", "request": "20s", "responseHeader": "0s"}))
    assert (capped.condition_wait, capped.response_header_timeout) == (20, 0)
    fallback = iroute.parse(
        document(timeouts={"readiness": "0s"}, coldStart={"fallback": {"service": "s", "port": 80}})
    )
    assert fallback.failover is not None
    assert fallback.failover.timeout_seconds == 30
    assert fallback.condition_wait is None


def test_fields_zerohop_does_not_act_on_are_notices() -> None:
    target = iroute.parse(document(proxyMode="Endpoint", coldStart={"fallback": {"service": "s", "port": 80}}))
    assert target.ignored == ("proxyMode",)  # coldStart.fallback is acted on: the failover
    assert target.failover is not None
    assert any("spec.proxyMode is accepted but not acted on" in line for line in target.notices())
    assert iroute.parse(document(proxyMode="Service")).ignored == ()


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"target": None}, "spec.target: required"),
        ({"target": {"port": 80}}, "spec.target.service: required"),
        ({"target": {"service": "s"}}, "spec.target: one of port or portName is required"),
        ({"target": {"service": "s", "port": 80, "portName": "http"}}, "spec.target: set either port or portName"),
        ({"target": {"service": "s", "port": 0}}, "spec.target.port: expected 1..65535"),
        ({"scalingMetric": None}, "spec.scalingMetric: required"),
        ({"scalingMetric": {}}, "spec.scalingMetric: set concurrency, requestRate or both"),
        (
            {"scalingMetric": {"concurrency": {"targetValue": 0}}},
            "spec.scalingMetric.concurrency.targetValue: must be > 0",
        ),
        (
            {"scalingMetric": {"requestRate": {"window": "1s", "granularity": "2s"}}},
            "spec.scalingMetric.requestRate: granularity must not exceed window",
        ),
        ({"scalingMetric": {"requestRate": {"window": "0s"}}}, "spec.scalingMetric.requestRate.window: must be > 0"),
        ({"rules": [{"hosts": ["bad host"]}]}, "spec.rules[0].hosts[0]: 'bad host' is not a host name"),
        ({"rules": [{}, {"paths": [{"value": "api"}]}]}, "spec.rules[1].paths[0]: must start with '/'"),
        ({"rules": [{"paths": [{}]}]}, "spec.rules[0].paths[0].value: required"),
        ({"rules": [{"headers": [{"value": "x"}]}]}, "spec.rules[0].headers[0].name: required"),
        ({"rules": {"hosts": ["a"]}}, "spec.rules: expected a list"),
        ({"timeouts": {"readiness": "soon"}}, "spec.timeouts.readiness:"),
        ({"timeouts": {"request": "-1s"}}, "spec.timeouts.request: not a duration"),
        ({"coldStart": {}}, "spec.coldStart.fallback: required"),
        ({"coldStart": {"fallback": {"service": "s"}}}, "spec.coldStart.fallback: one of port or portName"),
        ({"proxyMode": "Direct"}, "spec.proxyMode: expected one of Service, Endpoint"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec, match="^" + field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        iroute.parse(document(**spec))


def test_kind_api_group_and_unknown_fields() -> None:
    with pytest.raises(InvalidSpec, match="kind: expected InterceptorRoute"):
        iroute.parse({**document(), "kind": "HTTPScaledObject"})
    with pytest.raises(InvalidSpec, match=r"apiVersion: expected http\.keda\.sh/v1beta1"):
        iroute.parse({**document(), "apiVersion": "keda.sh/v1alpha1"})
    typo = document(rules=[{"host": ["a.example.com"]}])
    with pytest.raises(InvalidSpec, match=r"spec\.rules\[0\]\.host: unknown field; did you mean hosts\?"):
        iroute.parse(typo, strict=True)
    assert [str(u) for u in iroute.parse(typo).unknown] == ["spec.rules[0].host: unknown field; did you mean hosts?"]


def test_the_scaled_object_trigger_binds_the_route_to_its_workload() -> None:
    [binding] = iroute.bindings(
        scaled_object(minReplicaCount=2, maxReplicaCount=5, cooldownPeriod=60, initialCooldownPeriod=10)
    )
    assert (binding.scaled_object, binding.route) == (TargetKey("shop", "app-so"), TargetKey("shop", "app"))
    assert (binding.name, binding.kind, binding.api_version) == ("app-deploy", "Deployment", "apps/v1")
    bound = iroute.bind(iroute.parse(document()), binding)
    assert (bound.scale_target.name, bound.scale_target.service, bound.scale_target.port) == (
        "app-deploy",
        "app-svc",
        8080,
    )
    assert (bound.min_replicas, bound.max_replicas, bound.scaledown_period, bound.initial_cooldown_period) == (
        2,
        5,
        60,
        10,
    )
    assert bound.activation_replicas == 2


def test_only_external_push_triggers_naming_a_route_bind() -> None:
    assert iroute.bindings(scaled_object(triggers=[{"type": "cpu", "metadata": {"interceptorRoute": "app"}}])) == []
    assert (
        iroute.bindings(scaled_object(triggers=[{"type": "external-push", "metadata": {"httpScaledObject": "a"}}]))
        == []
    )
    [defaults] = iroute.bindings(scaled_object(scaleTargetRef={"name": "w", "kind": "StatefulSet"}))
    assert (defaults.kind, defaults.min_replicas, defaults.max_replicas, defaults.cooldown_period) == (
        "StatefulSet",
        0,
        100,
        300,
    )
    with pytest.raises(InvalidSpec, match=r"spec: maxReplicaCount \(1\) must be >= minReplicaCount \(2\)"):
        iroute.bindings(scaled_object(minReplicaCount=2, maxReplicaCount=1))


def test_the_scaling_metric_hash_changes_with_the_metrics_only() -> None:
    base = iroute.scaling_metric_hash(iroute.parse(document()))
    assert iroute.scaling_metric_hash(iroute.parse(document(rules=None, timeouts={"readiness": "5s"}))) == base
    assert (
        iroute.scaling_metric_hash(iroute.parse(document(scalingMetric={"concurrency": {"targetValue": 11}}))) != base
    )
    both = document(scalingMetric={"concurrency": {"targetValue": 10}, "requestRate": {}})
    assert iroute.scaling_metric_hash(iroute.parse(both)) != base


def test_status_shows_the_kind_and_every_metric() -> None:
    registry = TargetRegistry(
        ColdGate(max_held_per_target=1, max_held_total=1), hold_timeout=30, in_flight=InFlightMode.ALL
    )
    state = registry.upsert(
        iroute.parse(document(scalingMetric={"concurrency": {"targetValue": 5}, "requestRate": {}}))
    )
    state.traffic.in_flight = 3
    status = target_status(state, None, 0.0)
    assert status["kind"] == "InterceptorRoute"
    assert status["metrics"] == [
        {"metric": "concurrency", "targetValue": 5, "metricValue": 3.0},
        {"metric": "requestRate", "targetValue": 100, "metricValue": 0.0},
    ]
