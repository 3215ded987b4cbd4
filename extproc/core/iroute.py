"""InterceptorRoute documents (`http.keda.sh/v1beta1`, the add-on's API since v0.14) parsed into typed targets,
and the KEDA ScaledObject whose trigger names a route, which says what it scales.

A route is served like an HTTPScaledObject of the same namespace and name (the two kinds share one name space,
as in the add-on, which serves each HTTPScaledObject through a route of its name): the same host, path and
header matching, per rule; the same counts. What differs:
- `spec.rules[]`: several rules, any of which may match (each: hosts, `paths[].value`, headers);
- `spec.scalingMetric`: concurrency, request rate, or both (both are reported to KEDA);
- `spec.coldStart.fallback` is the failover Service, after `timeouts.readiness` (30 s when unset or `0s`);
- `spec.timeouts`: `readiness` bounds the hold (`0s`: no deadline of its own), `request` bounds it too,
  `responseHeader` is the gateway's route timeout (`0s`: none);
- no workload: the user's own ScaledObject names the route in an `external-push` trigger
  (`metadata.interceptorRoute`) and says what to scale (`bindings`, `bind`); the trigger carries a digest of
  the route's metrics (`scaling_metric_hash`) so that KEDA notices when they change.
Errors are `InvalidSpec` naming the field, as for HTTPScaledObjects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.core.durations import parse_duration
from extproc.core.fieldcheck import LEAF, Tree
from extproc.core.httpso import (
    API_GROUP,
    DEFAULT_FAILOVER_TIMEOUT_SECONDS,
    DEFAULT_GRANULARITY_SECONDS,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_SCALEDOWN_PERIOD,
    DEFAULT_TARGET_VALUE,
    DEFAULT_WINDOW_SECONDS,
    OBJECT_META,
    FailoverRef,
    HeaderMatch,
    InvalidSpec,
    MetricKind,
    RouteRule,
    ScaledTarget,
    ScaleTargetRef,
    ScalingMetric,
    TargetKey,
    _dns_label,
    _headers,
    _hosts,
    _int,
    _list,
    _mapping,
    _path_prefixes,
    _port,
    _positive_number,
    _string_map,
    envelope,
)

API_VERSION = f"{API_GROUP}/v1beta1"
KIND = "InterceptorRoute"
# The ScaledObject trigger metadata key naming the route (the add-on's scaler reads the same key).
TRIGGER_KEY = "interceptorRoute"
# The trigger metadata key holding `scaling_metric_hash` (the add-on's operator keeps the same key up to date).
SCALING_METRIC_HASH_KEY = "scalingMetricHash"
TRIGGER_TYPES = ("external-push", "external")
PROXY_MODES = ("Service", "Endpoint")

_TARGET_REF: Tree = {"service": LEAF, "port": LEAF, "portName": LEAF}
SPEC_FIELDS: Tree = {
    "target": _TARGET_REF,
    "proxyMode": LEAF,
    "rules": [{"hosts": LEAF, "paths": [{"value": LEAF}], "headers": [{"name": LEAF, "value": LEAF}]}],
    "scalingMetric": {
        "concurrency": {"targetValue": LEAF},
        "requestRate": {"targetValue": LEAF, "window": LEAF, "granularity": LEAF},
    },
    "coldStart": {"fallback": _TARGET_REF},
    "timeouts": {"readiness": LEAF, "request": LEAF, "responseHeader": LEAF},
}
FIELDS: Tree = {"apiVersion": LEAF, "kind": LEAF, "metadata": OBJECT_META, "spec": SPEC_FIELDS, "status": LEAF}


def parse(document: Mapping[str, Any], default_namespace: str = "default", *, strict: bool = False) -> ScaledTarget:
    """Validate one InterceptorRoute document into a ScaledTarget (`kind` InterceptorRoute, no workload yet).

    As `httpso.parse`: unknown fields are an InvalidSpec when `strict`, else kept in `ScaledTarget.unknown`."""
    unknown, name, namespace, metadata, spec = envelope(
        document, FIELDS, KIND, API_VERSION, default_namespace, strict=strict
    )
    rules = _rules(spec.get("rules"))
    metrics = _scaling_metrics(spec.get("scalingMetric"))
    readiness, request, response_header = _timeouts(spec.get("timeouts"))
    proxy_mode = spec.get("proxyMode")
    if proxy_mode is not None and proxy_mode not in PROXY_MODES:
        raise InvalidSpec(f"spec.proxyMode: expected one of {', '.join(PROXY_MODES)}, got {proxy_mode!r}")
    ignored = ("proxyMode",) if proxy_mode == "Endpoint" else ()  # coldStart.fallback is acted on (failover)
    waits = [t for t in (readiness, request) if t]
    one = rules[0] if len(rules) == 1 else None
    return ScaledTarget(
        key=TargetKey(namespace, name),
        hosts=one.hosts if one else _union_hosts(rules),
        path_prefixes=one.path_prefixes if one else tuple(dict.fromkeys(p for r in rules for p in r.path_prefixes)),
        headers=one.headers if one else (),
        scale_target=_target(spec.get("target")),
        metric=metrics[-1],  # the request rate when set: its window is the one counted over
        condition_wait=min(waits) if waits else None,
        response_header_timeout=response_header,
        failover=_fallback(spec.get("coldStart"), readiness),
        kind=KIND,
        rules=rules if len(rules) > 1 else (),
        metrics=metrics if len(metrics) > 1 else (),
        labels=_string_map(metadata.get("labels"), "metadata.labels"),
        annotations=_string_map(metadata.get("annotations"), "metadata.annotations"),
        uid=str(metadata.get("uid") or ""),
        generation=int(metadata.get("generation") or 0),
        unknown=unknown,
        ignored=ignored,
    )


def _union_hosts(rules: tuple[RouteRule, ...]) -> tuple[str, ...]:
    """The hosts of every rule; `*` among them when a rule with no hosts sits beside rules with some."""
    hosts = dict.fromkeys(h for rule in rules for h in rule.hosts)
    if hosts and any(not rule.hosts for rule in rules):
        hosts["*"] = None
    return tuple(hosts)


def _rules(value: Any) -> tuple[RouteRule, ...]:
    rules: list[RouteRule] = []
    for i, item in enumerate(_list(value, "spec.rules")):
        where = f"spec.rules[{i}]"
        rule = _mapping(item, where)
        paths: list[Any] = []
        for j, path in enumerate(_list(rule.get("paths"), f"{where}.paths")):
            path_value = _mapping(path, f"{where}.paths[{j}]").get("value")
            if path_value is None:
                raise InvalidSpec(f"{where}.paths[{j}].value: required")
            paths.append(path_value)
        headers: tuple[HeaderMatch, ...] = _headers(rule.get("headers"), f"{where}.headers")
        rules.append(
            RouteRule(_hosts(rule.get("hosts"), f"{where}.hosts"), _path_prefixes(paths, f"{where}.paths"), headers)
        )
    return tuple(dict.fromkeys(rules))


def _target(value: Any) -> ScaleTargetRef:
    where = "spec.target"
    if value is None:
        raise InvalidSpec(f"{where}: required")
    ref = _mapping(value, where)
    service = _dns_label(ref.get("service"), f"{where}.service")
    port, port_name = _port(ref, where, required=True)
    return ScaleTargetRef("", service, port, port_name)


def _scaling_metrics(value: Any) -> tuple[ScalingMetric, ...]:
    """Concurrency, request rate, or both (in that order); at least one is required."""
    where = "spec.scalingMetric"
    if value is None:
        raise InvalidSpec(f"{where}: required (concurrency, requestRate or both)")
    spec = _mapping(value, where)
    metrics: list[ScalingMetric] = []
    if spec.get("concurrency") is not None:
        concurrency = _mapping(spec["concurrency"], f"{where}.concurrency")
        target = _positive_number(
            concurrency.get("targetValue"), f"{where}.concurrency.targetValue", DEFAULT_TARGET_VALUE
        )
        metrics.append(ScalingMetric(MetricKind.CONCURRENCY, target))
    if spec.get("requestRate") is not None:
        rate = _mapping(spec["requestRate"], f"{where}.requestRate")
        window = _duration(rate.get("window"), f"{where}.requestRate.window", DEFAULT_WINDOW_SECONDS, positive=True)
        granularity = _duration(
            rate.get("granularity"), f"{where}.requestRate.granularity", DEFAULT_GRANULARITY_SECONDS, positive=True
        )
        if granularity > window:
            raise InvalidSpec(f"{where}.requestRate: granularity must not exceed window")
        target = _positive_number(rate.get("targetValue"), f"{where}.requestRate.targetValue", DEFAULT_TARGET_VALUE)
        metrics.append(ScalingMetric(MetricKind.REQUEST_RATE, target, window, granularity))
    if not metrics:
        raise InvalidSpec(f"{where}: set concurrency, requestRate or both")
    return tuple(metrics)


def _duration(value: Any, where: str, default: float, *, positive: bool = False) -> float:
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise InvalidSpec(f"{where}: {exc}") from None
    if seconds < 0 or (positive and seconds == 0):
        raise InvalidSpec(f"{where}: must be {'> 0' if positive else '>= 0'}")
    return seconds


def _timeouts(value: Any) -> tuple[float | None, float | None, float | None]:
    """readiness, request (None when unset or `0s`: no deadline of their own) and responseHeader (None when
    unset: the gateway's default; 0: none)."""
    timeouts = _mapping(value, "spec.timeouts")
    found: list[float | None] = []
    for name in ("readiness", "request", "responseHeader"):
        raw = timeouts.get(name)
        found.append(None if raw is None else _duration(raw, f"spec.timeouts.{name}", 0.0))
    readiness, request, response_header = found
    return readiness or None, request or None, response_header


def _fallback(value: Any, readiness: float | None) -> FailoverRef | None:
    if value is None:
        return None
    where = "spec.coldStart"
    fallback = _mapping(value, where).get("fallback")
    if fallback is None:
        raise InvalidSpec(f"{where}.fallback: required")
    where += ".fallback"
    ref = _mapping(fallback, where)
    service = _dns_label(ref.get("service"), f"{where}.service")
    port, port_name = _port(ref, where, required=True)
    timeout = math.ceil(readiness) if readiness else DEFAULT_FAILOVER_TIMEOUT_SECONDS
    return FailoverRef(service, port, port_name, timeout)


def scaling_metric_hash(target: ScaledTarget) -> str:
    """A digest of what the route reports to KEDA (metrics, targets, windows). Written into the triggers naming
    the route (`SCALING_METRIC_HASH_KEY`), as the add-on's operator does, so an edited route changes its
    ScaledObject and KEDA asks GetMetricSpec again instead of keeping the old targets."""
    described = [[m.kind.value, m.target_value, m.window, m.granularity] for m in target.scaling_metrics]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Binding:
    """A ScaledObject trigger naming a route: what the route's target scales, with the ScaledObject's bounds."""

    scaled_object: TargetKey
    route: TargetKey
    name: str
    kind: str = "Deployment"
    api_version: str = "apps/v1"
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    cooldown_period: int = DEFAULT_SCALEDOWN_PERIOD
    initial_cooldown_period: int = 0


def bindings(document: Mapping[str, Any], default_namespace: str = "default") -> list[Binding]:
    """The routes a KEDA ScaledObject's `external-push` triggers name (`metadata.interceptorRoute`), each with
    the workload and replica bounds the ScaledObject gives it. Raises InvalidSpec naming the field."""
    metadata = _mapping(document.get("metadata"), "metadata")
    name = _dns_label(metadata.get("name"), "metadata.name")
    namespace = _dns_label(metadata.get("namespace") or default_namespace, "metadata.namespace")
    spec = _mapping(document.get("spec"), "spec")
    routes: list[str] = []
    for i, trigger in enumerate(_list(spec.get("triggers"), "spec.triggers")):
        trigger = _mapping(trigger, f"spec.triggers[{i}]")
        route = _mapping(trigger.get("metadata"), f"spec.triggers[{i}].metadata").get(TRIGGER_KEY)
        if trigger.get("type") in TRIGGER_TYPES and route is not None:
            routes.append(_dns_label(route, f"spec.triggers[{i}].metadata.{TRIGGER_KEY}"))
    if not routes:
        return []
    ref = _mapping(spec.get("scaleTargetRef"), "spec.scaleTargetRef")
    workload = _dns_label(ref.get("name"), "spec.scaleTargetRef.name")
    kind, api_version = ref.get("kind") or "Deployment", ref.get("apiVersion") or "apps/v1"
    if not isinstance(kind, str) or not isinstance(api_version, str):
        raise InvalidSpec("spec.scaleTargetRef: kind and apiVersion must be strings")
    low = _int(spec.get("minReplicaCount"), "spec.minReplicaCount", DEFAULT_MIN_REPLICAS)
    high = _int(spec.get("maxReplicaCount"), "spec.maxReplicaCount", DEFAULT_MAX_REPLICAS, 1)
    if high < low:
        raise InvalidSpec(f"spec: maxReplicaCount ({high}) must be >= minReplicaCount ({low})")
    cooldown = _int(spec.get("cooldownPeriod"), "spec.cooldownPeriod", DEFAULT_SCALEDOWN_PERIOD)
    initial = _int(spec.get("initialCooldownPeriod"), "spec.initialCooldownPeriod", 0)
    own = TargetKey(namespace, name)
    return [
        Binding(own, TargetKey(namespace, route), workload, kind, api_version, low, high, cooldown, initial)
        for route in dict.fromkeys(routes)
    ]


def bind(target: ScaledTarget, binding: Binding) -> ScaledTarget:
    """`target` (a route) scaling what `binding` (its ScaledObject's trigger) says."""
    ref = dataclasses.replace(
        target.scale_target, name=binding.name, kind=binding.kind, api_version=binding.api_version
    )
    return dataclasses.replace(
        target,
        scale_target=ref,
        min_replicas=binding.min_replicas,
        max_replicas=binding.max_replicas,
        scaledown_period=binding.cooldown_period,
        initial_cooldown_period=binding.initial_cooldown_period,
    )
