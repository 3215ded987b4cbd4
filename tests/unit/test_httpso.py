"""HTTPScaledObject parsing: the add-on's fields, defaults and rules, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.core.durations import format_duration, parse_duration
from extproc.core.engine import Core
from extproc.core.httpso import (
    InvalidSpec,
    MetricKind,
    TargetKey,
    metric_name_for,
    normalize_host,
    parse,
)


def document(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hosts": ["app.example.com"],
        "scaleTargetRef": {"name": "app", "service": "app-svc", "port": 8080},
    }
    base.update(spec)
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": base,
    }


def test_defaults_follow_the_add_on() -> None:
    target = parse(document())
    assert target.key == TargetKey("shop", "app")
    assert target.metric.kind is MetricKind.CONCURRENCY
    assert target.metric.target_value == 100
    assert (target.min_replicas, target.max_replicas) == (0, 100)
    assert target.scaledown_period == 300
    assert target.initial_cooldown_period == 0
    assert target.path_prefixes == ()
    assert target.scale_target.kind == "Deployment"
    assert target.scale_target.api_version == "apps/v1"
    assert target.activation_replicas == 1


def test_path_prefixes_are_whole_segments_without_a_trailing_slash() -> None:
    # The add-on trims slashes off a prefix: "/api/" and "/api" are the same prefix.
    target = parse(document(pathPrefixes=["/api/", "/api", "//", "/v1//x/", "/"]))
    assert target.path_prefixes == ("/api", "/", "/v1//x")


def test_request_rate_with_durations() -> None:
    target = parse(
        document(scalingMetric={"requestRate": {"targetValue": 5, "window": "1m30s", "granularity": "500ms"}})
    )
    assert target.metric.kind is MetricKind.REQUEST_RATE
    assert (target.metric.target_value, target.metric.window, target.metric.granularity) == (5, 90, 0.5)


def test_request_rate_defaults() -> None:
    target = parse(document(scalingMetric={"requestRate": {}}))
    assert (target.metric.target_value, target.metric.window, target.metric.granularity) == (100, 60, 1)


def test_legacy_target_pending_requests_is_a_concurrency_target() -> None:
    target = parse(document(targetPendingRequests=7))
    assert target.metric.kind is MetricKind.CONCURRENCY
    assert target.metric.target_value == 7


def test_hosts_are_normalised_and_deduplicated() -> None:
    target = parse(document(hosts=["App.Example.COM:8080", "app.example.com.", "*.Apps.Example.com"]))
    assert target.hosts == ("app.example.com", "*.apps.example.com")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"scalingMetric": {"requestRate": {}, "concurrency": {}}}, "spec.scalingMetric: set either"),
        ({"scaleTargetRef": {"name": "app", "service": "svc"}}, "spec.scaleTargetRef: one of port or portName"),
        ({"scaleTargetRef": {"name": "a", "service": "s", "port": 80, "portName": "http"}}, "not both"),
        ({"scaleTargetRef": {"name": "a", "port": 80}}, "spec.scaleTargetRef.service: required"),
        ({"scaleTargetRef": {"service": "s", "port": 80}}, "spec.scaleTargetRef.name: required"),
        ({"scaleTargetRef": {"name": "a", "service": "s", "port": 70000}}, "spec.scaleTargetRef.port"),
        ({"replicas": {"min": 5, "max": 2}}, "spec.replicas: max (2) must be >= min (5)"),
        ({"replicas": {"min": -1}}, "spec.replicas.min: must be >= 0"),
        ({"replicas": {"max": 0}}, "spec.replicas.max: must be >= 1"),
        ({"pathPrefixes": ["api"]}, "spec.pathPrefixes[0]: must start with '/'"),
        ({"pathPrefixes": ["/", "/api?x=1"]}, "spec.pathPrefixes[1]: a path prefix has no query"),
        ({"pathPrefixes": ["/api#top"]}, "spec.pathPrefixes[0]: a path prefix has no query or fragment"),
        ({"hosts": ["bad host!"]}, "spec.hosts[0]"),
        ({"hosts": "app.example.com"}, "spec.hosts: expected a list"),
        ({"headers": [{"value": "x"}]}, "spec.headers[0].name: required"),
        ({"scalingMetric": {"requestRate": {"window": "soon"}}}, "spec.scalingMetric.requestRate.window"),
        ({"scalingMetric": {"requestRate": {"window": "1s", "granularity": "2s"}}}, "granularity must not exceed"),
        ({"scalingMetric": {"concurrency": {"targetValue": 0}}}, "targetValue: must be > 0"),
        ({"scaledownPeriod": "5m"}, "spec.scaledownPeriod: expected an integer"),
        ({"timeouts": {"conditionWait": "forever"}}, "spec.timeouts.conditionWait"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse(document(**spec))
    assert field in str(raised.value)


def test_wrong_kind_and_missing_name() -> None:
    with pytest.raises(InvalidSpec, match="kind: expected HTTPScaledObject"):
        parse({**document(), "kind": "ScaledObject"})
    with pytest.raises(InvalidSpec, match=r"metadata.name: required"):
        parse({**document(), "metadata": {}})
    with pytest.raises(InvalidSpec, match="not a mapping"):
        parse(["not", "a", "mapping"])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["app\n", "App", "-app", "app-", "a..b", "a.-b", "app_1", "a" * 254, "app/x"])
def test_names_that_are_not_kubernetes_names_are_invalid(name: str) -> None:
    with pytest.raises(InvalidSpec, match="not a valid Kubernetes name"):
        parse({**document(), "metadata": {"name": name, "namespace": "shop"}})


@pytest.mark.parametrize("name", ["app", "a", "my-app.v2", "a" * 63, "x.y.z", "0app9"])
def test_kubernetes_names_are_valid(name: str) -> None:
    assert parse({**document(), "metadata": {"name": name, "namespace": "shop"}}).key.name == name


def test_timeouts_headers_and_failover() -> None:
    target = parse(
        document(
            timeouts={"conditionWait": "20s", "responseHeader": "500ms"},
            headers=[{"name": "X-Tenant", "value": "a"}, {"name": "x-debug"}],
            coldStartTimeoutFailoverRef={"service": "fallback", "port": 80},
        )
    )
    assert target.condition_wait == 20
    assert target.response_header_timeout == 0.5
    assert [(h.name, h.value) for h in target.headers] == [("x-tenant", "a"), ("x-debug", None)]
    assert target.failover is not None
    assert target.failover.timeout_seconds == 30


def test_metric_name_is_escaped_like_the_add_on() -> None:
    assert metric_name_for(TargetKey("default", "app")) == "http-default_002Fapp"
    assert metric_name_for(TargetKey("team-a", "api.v2")) == "http-team-a_002Fapi.v2"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8443", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("  spaced.example ", "spaced.example"),
    ],
)
def test_normalize_host(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5s", 1.5), ("30", 30), (12, 12), ("0", 0)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-5s", "5s garbage", "m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 1.5, 60, 90)] == ["250ms", "1.5s", "1m", "90s"]


@pytest.mark.parametrize(
    ("where", "typo", "message"),
    [
        ("spec", {"host": ["a.example.com"]}, "spec.host: unknown field; did you mean hosts?"),
        ("spec", {"replica": {"max": 3}}, "spec.replica: unknown field; did you mean replicas?"),
        ("spec", {"scaledownPeriods": 30}, "spec.scaledownPeriods: unknown field; did you mean scaledownPeriod?"),
        (
            "spec",
            {"scalingMetric": {"concurrency": {"targetValu": 5}}},
            "spec.scalingMetric.concurrency.targetValu: unknown field; did you mean targetValue?",
        ),
        (
            "spec",
            {"headers": [{"name": "x", "vlaue": "y"}]},
            "spec.headers[0].vlaue: unknown field; did you mean value?",
        ),
        ("top", {"specc": {}}, "specc: unknown field; did you mean spec?"),
        ("top", {"metadata": {"name": "app", "namspace": "x"}}, "metadata.namspace: unknown field; did you mean"),
        ("spec", {"zzzz": 1}, "spec.zzzz: unknown field"),
    ],
)
def test_unknown_fields_name_path_and_nearest_valid_name(where: str, typo: dict[str, Any], message: str) -> None:
    doc = document()
    if where == "spec":
        doc["spec"].update(typo)
    else:
        doc.update(typo)
    with pytest.raises(InvalidSpec) as raised:
        parse(doc, strict=True)
    assert message in str(raised.value)
    # Not strict (the API server's objects): parsed, the typo kept for a warning.
    lenient = parse(doc)
    assert [str(u) for u in lenient.unknown] == [str(raised.value)]


def test_every_add_on_field_is_known() -> None:
    doc = document(
        pathPrefixes=["/a"],
        headers=[{"name": "x", "value": "y"}],
        scaleTargetRef={"name": "app", "apiVersion": "apps/v1", "kind": "Deployment", "service": "s", "port": 1},
        coldStartTimeoutFailoverRef={"service": "f", "portName": "http", "timeoutSeconds": 5},
        replicas={"min": 0, "max": 3},
        scaledownPeriod=30,
        initialCooldownPeriod=0,
        scalingMetric={"requestRate": {"targetValue": 5, "window": "1m", "granularity": "1s"}},
        timeouts={"conditionWait": "20s", "responseHeader": "5s"},
        placeholderConfig={"enabled": True, "refreshInterval": 5, "statusCode": 503, "headers": {}, "content": "x"},
    )
    doc["metadata"].update(labels={"a": "b"}, annotations={}, uid="u", generation=2, resourceVersion="7")
    doc["status"] = {"conditions": []}
    target = parse(doc, strict=True)
    assert target.unknown == ()
    # Every add-on field is acted on: none is accepted-but-ignored any more.
    assert target.ignored == ()
    assert target.notices() == []
    assert target.failover is not None
    assert target.placeholder is not None


def test_placeholder_switched_off_is_none() -> None:
    target = parse(document(placeholderConfig={"enabled": False, "content": "{{.Anything}}"}))
    assert target.placeholder is None
    assert target.notices() == []


def test_a_target_without_hosts_or_paths_is_a_catch_all_notice() -> None:
    assert parse(document(hosts=[], pathPrefixes=["/api"])).notices() == []
    target = parse(document(hosts=[]))
    assert target.catch_all
    assert target.notices() == ["shop/app: neither hosts nor pathPrefixes: it matches every host and path"]


def test_core_logs_each_notice_once_per_object(caplog: pytest.LogCaptureFixture) -> None:
    core = Core(hold_timeout=5, max_held_per_target=1, max_held_total=1)
    catch_all = parse(document(hosts=[]))
    with caplog.at_level("WARNING"):
        core.apply_targets([catch_all], {})
        core.apply_targets([catch_all], {})
        core.apply_targets([parse(document(hosts=[], replicas={"max": 3}))], {})
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert lines == ["shop/app: neither hosts nor pathPrefixes: it matches every host and path"]
    # Fixed, then broken again: said again.
    core.apply_targets([parse(document())], {})
    caplog.clear()
    with caplog.at_level("WARNING"):
        core.apply_targets([catch_all], {})
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_core_takes_the_same_target_again_without_touching_it(caplog: pytest.LogCaptureFixture) -> None:
    """A target derived again from the same document (its Service came in) is the same object: the core
    neither updates its state nor says again what it said when it came (a wait over --hold-timeout)."""
    core = Core(hold_timeout=5, max_held_per_target=1, max_held_total=1)
    slow = parse(document(timeouts={"conditionWait": "60s"}))
    with caplog.at_level("WARNING"):
        core.update_targets([slow])
        state = core.registry.get(slow.key)
        published = core.router.published
        core.update_targets([slow])
    assert core.registry.get(slow.key) is state
    assert core.router.published == published
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "exceeds --hold-timeout" in warnings[0]
