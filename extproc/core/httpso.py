"""HTTPScaledObject documents (`http.keda.sh/v1alpha1`) parsed into typed, validated targets.

The field names, defaults and rules follow the KEDA HTTP add-on so that its users' manifests work unchanged.
Parsing never raises anything but `InvalidSpec`, whose message names the offending field, so one bad
document can be reported (a log line, a status condition) without affecting the others.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from extproc.core.durations import parse_duration
from extproc.core.fieldcheck import LEAF, Tree, UnknownField, unknown_fields
from extproc.core.placeholder import Placeholder, compile_template

API_GROUP = "http.keda.sh"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "HTTPScaledObject"

SKIP_SCALEDOBJECT_ANNOTATION = "httpscaledobject.keda.sh/skip-scaledobject-creation"
ORPHAN_SCALEDOBJECT_ANNOTATION = "httpscaledobject.keda.sh/orphan-scaledobject"

DEFAULT_TARGET_VALUE = 100.0
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_GRANULARITY_SECONDS = 1.0
DEFAULT_MIN_REPLICAS = 0
DEFAULT_MAX_REPLICAS = 100
DEFAULT_SCALEDOWN_PERIOD = 300
DEFAULT_FAILOVER_TIMEOUT_SECONDS = 30
DEFAULT_PLACEHOLDER_STATUS = 503
DEFAULT_PLACEHOLDER_REFRESH_SECONDS = 5

# A DNS subdomain (RFC 1123 labels joined by dots), matched whole: no trailing newline slips past a `$`.
_DNS_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_HOST = re.compile(r"^(\*\.)?[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?)*$")
_UNSAFE_METRIC_CHARS = re.compile(r"[^-.0-9A-Za-z]")


# Every field of the add-on's v1alpha1 HTTPScaledObject (and Kubernetes' ObjectMeta): the names a document may use.
OBJECT_META: Tree = dict.fromkeys(
    (
        "name",
        "namespace",
        "generateName",
        "labels",
        "annotations",
        "uid",
        "generation",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "finalizers",
        "ownerReferences",
        "managedFields",
        "selfLink",
    ),
    LEAF,
)
_PORT_REF: Tree = {"service": LEAF, "port": LEAF, "portName": LEAF}
SPEC_FIELDS: Tree = {
    "hosts": LEAF,
    "pathPrefixes": LEAF,
    "headers": [{"name": LEAF, "value": LEAF}],
    "scaleTargetRef": {"name": LEAF, "deployment": LEAF, "apiVersion": LEAF, "kind": LEAF, **_PORT_REF},
    "coldStartTimeoutFailoverRef": {**_PORT_REF, "timeoutSeconds": LEAF},
    "replicas": {"min": LEAF, "max": LEAF},
    "targetPendingRequests": LEAF,
    "scaledownPeriod": LEAF,
    "initialCooldownPeriod": LEAF,
    "scalingMetric": {
        "concurrency": {"targetValue": LEAF},
        "requestRate": {"targetValue": LEAF, "window": LEAF, "granularity": LEAF},
    },
    "timeouts": {"conditionWait": LEAF, "responseHeader": LEAF},
    "placeholderConfig": dict.fromkeys(("enabled", "refreshInterval", "statusCode", "headers", "content"), LEAF),
}
FIELDS: Tree = {"apiVersion": LEAF, "kind": LEAF, "metadata": OBJECT_META, "spec": SPEC_FIELDS, "status": LEAF}

# Add-on fields zerohop accepts (so manifests migrate unchanged) but does not act on, and what happens instead.
# `coldStartTimeoutFailoverRef`, `placeholderConfig` (and an InterceptorRoute's `coldStart.fallback`) are acted on
# (docs/istio.md, add-on fields).
IGNORED_FIELDS: Mapping[str, str] = {
    # InterceptorRoute (core/iroute.py) fields, by their own names.
    "proxyMode": "the gateway routes to the Service as it always does; zerohop is not a proxy",
}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class InvalidSpec(ValueError):
    """An HTTPScaledObject that cannot be served; the message names the field and the rule."""


class TargetKey(NamedTuple):
    """Namespace and name of an HTTPScaledObject: the identity of a scale target everywhere in zerohop."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str, default_namespace: str = "default") -> TargetKey:
        namespace, sep, name = text.partition("/")
        return cls(namespace, name) if sep else cls(default_namespace, namespace)


class MetricKind(enum.Enum):
    """Which count drives scaling, as `spec.scalingMetric` chooses it."""

    CONCURRENCY = "concurrency"
    REQUEST_RATE = "requestRate"


@dataclass(frozen=True, slots=True)
class ScalingMetric:
    kind: MetricKind
    target_value: float
    window: float = DEFAULT_WINDOW_SECONDS
    granularity: float = DEFAULT_GRANULARITY_SECONDS


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """`spec.headers[]`: the header must be present, and equal `value` when one is given."""

    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One way a request reaches a target: any of `hosts` (none: every host), the longest of `path_prefixes`
    (none: every path), and all of `headers`. An HTTPScaledObject is one rule; an InterceptorRoute lists several."""

    hosts: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class ScaleTargetRef:
    name: str
    service: str
    port: int | None = None
    port_name: str | None = None
    kind: str = "Deployment"
    api_version: str = "apps/v1"


@dataclass(frozen=True, slots=True)
class FailoverRef:
    service: str
    port: int | None
    port_name: str | None
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class PlaceholderConfig:
    """`spec.placeholderConfig` when enabled: what a browser asking for a cold target gets at once."""

    status_code: int = DEFAULT_PLACEHOLDER_STATUS
    refresh_interval: int = DEFAULT_PLACEHOLDER_REFRESH_SECONDS
    headers: tuple[tuple[str, str], ...] = ()
    template: Placeholder = field(default_factory=lambda: compile_template(""))


@dataclass(frozen=True, slots=True)
class ScaledTarget:
    """One valid HTTPScaledObject or InterceptorRoute (`kind`): what to match, what to scale, and how to count.

    An InterceptorRoute may list several `rules` (then `hosts`, `path_prefixes` and `headers` are their union,
    for whoever only asks which hosts a target has) and scale on both metrics (`metrics`, `metric` being the
    one whose window the request rate is counted over). It names no workload: `scale_target.name` is empty
    and the ScaledObject whose trigger names the route says what to scale."""

    key: TargetKey
    hosts: tuple[str, ...]
    path_prefixes: tuple[str, ...]
    headers: tuple[HeaderMatch, ...]
    scale_target: ScaleTargetRef
    metric: ScalingMetric
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    scaledown_period: int = DEFAULT_SCALEDOWN_PERIOD
    initial_cooldown_period: int = 0
    condition_wait: float | None = None
    response_header_timeout: float | None = None
    failover: FailoverRef | None = None
    placeholder: PlaceholderConfig | None = None
    kind: str = KIND
    rules: tuple[RouteRule, ...] = ()
    metrics: tuple[ScalingMetric, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    uid: str = field(default="", compare=False)
    generation: int = field(default=0, compare=False)
    # Fields the document has that zerohop does not know (typos), and add-on fields it accepts but ignores.
    unknown: tuple[UnknownField, ...] = field(default=(), compare=False)
    ignored: tuple[str, ...] = field(default=(), compare=False)

    @property
    def hold_wait(self) -> float | None:
        """How long a cold request may be held, as the add-on decides it: the failover's `timeoutSeconds`
        when a failover is set (it replaces `timeouts.conditionWait`), else `timeouts.conditionWait`; None for
        zerohop's --hold-timeout."""
        if self.failover is not None:
            wait = float(self.failover.timeout_seconds)
            if self.kind != KIND and self.condition_wait is not None:
                wait = min(wait, self.condition_wait)  # an InterceptorRoute's timeouts.request bounds it too
            return wait
        return self.condition_wait

    @property
    def catch_all(self) -> bool:
        """Neither hosts nor path prefixes: the target matches every request its headers allow."""
        if not self.rules:  # an HTTPScaledObject (asked once per object at every sync)
            return not self.hosts and not self.path_prefixes
        return all(not rule.hosts and not rule.path_prefixes for rule in self.routing_rules)

    @property
    def routing_rules(self) -> tuple[RouteRule, ...]:
        """Every rule a request may match (an HTTPScaledObject's one, or an InterceptorRoute's list)."""
        return self.rules or (RouteRule(self.hosts, self.path_prefixes, self.headers),)

    @property
    def scaling_metrics(self) -> tuple[ScalingMetric, ...]:
        """Every metric reported to KEDA: `metric`, or both of an InterceptorRoute that sets both."""
        return self.metrics or (self.metric,)

    def notices(self) -> list[str]:
        """What an operator should hear about this target once: typos, ignored add-on fields, a catch-all."""
        lines = [f"{self.key}: {problem} (ignored)" for problem in self.unknown]
        lines += [
            f"{self.key}: spec.{name} is accepted but not acted on: {IGNORED_FIELDS[name]}" for name in self.ignored
        ]
        if self.placeholder is not None and self.placeholder.template.problem:
            lines.append(f"{self.key}: spec.placeholderConfig.content: {self.placeholder.template.problem}")
        if self.catch_all:
            what = "neither hosts nor pathPrefixes" if self.kind == KIND else "no rule with hosts or paths"
            lines.append(f"{self.key}: {what}: it matches every host and path")
        return lines

    @property
    def metric_name(self) -> str:
        """The add-on's metric name: `http-<ns>/<name>` with unsafe characters escaped as `_%04X` (an
        InterceptorRoute: `http_<name>_concurrency` or `http_<name>_rate`, for `metric`)."""
        if self.kind != KIND:
            return route_metric_name(self.key.name, self.metric.kind)
        return metric_name_for(self.key)

    @property
    def activation_replicas(self) -> int:
        """Replicas to start on the first cold request: KEDA activates to max(1, min)."""
        return max(1, self.min_replicas)


def metric_name_for(key: TargetKey) -> str:
    def escape(match: re.Match[str]) -> str:
        return "_" + match.group(0).encode().hex().upper().rjust(4, "0")

    return _UNSAFE_METRIC_CHARS.sub(escape, f"http-{key.namespace}/{key.name}")


def route_metric_name(route: str, kind: MetricKind) -> str:
    """The add-on's metric name for an InterceptorRoute's metric: `http_<route>_concurrency` / `http_<route>_rate`."""
    return f"http_{route}_{'rate' if kind is MetricKind.REQUEST_RATE else 'concurrency'}"


def normalize_host(host: str) -> str:
    """Lower-case, without port or trailing dot: the form routes and requests are compared in."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(":")
    if colon >= 0 and host[colon + 1 :].isdigit():
        host = host[:colon]
    return host.rstrip(".")


def envelope(
    document: Mapping[str, Any],
    fields: Any,
    kind: str,
    api_version: str,
    default_namespace: str,
    *,
    strict: bool,
) -> tuple[tuple[Any, ...], str, str, Mapping[str, Any], Mapping[str, Any]]:
    """What every kind zerohop reads checks first: a mapping of `kind` in `api_version`'s group, the fields
    `fields` knows (unknown ones an InvalidSpec when `strict`, else returned), a valid name and namespace.
    Returns (unknown fields, name, namespace, metadata, spec)."""
    if not isinstance(document, Mapping):
        raise InvalidSpec("document is not a mapping")
    unknown = tuple(unknown_fields(document, fields))
    if unknown and strict:
        raise InvalidSpec("; ".join(str(problem) for problem in unknown))
    found = document.get("kind")
    if found != kind:
        raise InvalidSpec(f"kind: expected {kind}, got {found!r}")
    version = document.get("apiVersion")
    group = api_version.partition("/")[0]
    if not isinstance(version, str) or not version.startswith(group + "/"):
        raise InvalidSpec(f"apiVersion: expected {api_version}, got {version!r}")
    metadata = _mapping(document.get("metadata"), "metadata")
    name = _dns_label(metadata.get("name"), "metadata.name")
    namespace = _dns_label(metadata.get("namespace") or default_namespace, "metadata.namespace")
    return unknown, name, namespace, metadata, _mapping(document.get("spec"), "spec")


def parse(document: Mapping[str, Any], default_namespace: str = "default", *, strict: bool = False) -> ScaledTarget:
    """Validate one HTTPScaledObject document (a dict as read from YAML or the API) into a ScaledTarget.

    Fields no HTTPScaledObject has are an InvalidSpec when `strict` (a config file zerohop reads itself);
    otherwise (the API server, whose schema prunes them) they are kept in `ScaledTarget.unknown`."""
    unknown, name, namespace, metadata, spec = envelope(
        document, FIELDS, KIND, API_VERSION, default_namespace, strict=strict
    )

    return ScaledTarget(
        key=TargetKey(namespace, name),
        hosts=_hosts(spec.get("hosts")),
        path_prefixes=_path_prefixes(spec.get("pathPrefixes")),
        headers=_headers(spec.get("headers")),
        scale_target=_scale_target_ref(spec.get("scaleTargetRef")),
        metric=_scaling_metric(spec),
        min_replicas=_replicas(spec, "min", DEFAULT_MIN_REPLICAS),
        max_replicas=_max_replicas(spec),
        scaledown_period=_int(spec.get("scaledownPeriod"), "spec.scaledownPeriod", DEFAULT_SCALEDOWN_PERIOD),
        initial_cooldown_period=_int(spec.get("initialCooldownPeriod"), "spec.initialCooldownPeriod", 0),
        condition_wait=_timeout(spec, "conditionWait"),
        response_header_timeout=_timeout(spec, "responseHeader"),
        failover=_failover(spec.get("coldStartTimeoutFailoverRef")),
        placeholder=_placeholder(spec.get("placeholderConfig")),
        labels=_string_map(metadata.get("labels"), "metadata.labels"),
        annotations=_string_map(metadata.get("annotations"), "metadata.annotations"),
        uid=str(metadata.get("uid") or ""),
        generation=int(metadata.get("generation") or 0),
        unknown=unknown,
        ignored=_ignored(spec),
    )


def _ignored(spec: Mapping[str, Any]) -> tuple[str, ...]:
    if spec.keys().isdisjoint(IGNORED_FIELDS):
        return ()  # most objects: one set operation
    return tuple(name for name in IGNORED_FIELDS if spec.get(name) is not None)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if type(value) is dict:  # what the API and YAML give; spares the ABC check
        return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpec(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidSpec(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _dns_label(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{where}: required")
    if len(value) > 253 or _DNS_NAME.fullmatch(value) is None:
        raise InvalidSpec(f"{where}: {value!r} is not a valid Kubernetes name")
    return value


def _int(value: Any, where: str, default: int, minimum: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f"{where}: expected an integer, got {value!r}")
    if value < minimum:
        raise InvalidSpec(f"{where}: must be >= {minimum}, got {value}")
    return value


def _positive_number(value: Any, where: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSpec(f"{where}: expected a number, got {value!r}")
    if value <= 0:
        raise InvalidSpec(f"{where}: must be > 0, got {value}")
    return float(value)


# Thousands of HTTPScaledObjects name the same few windows ("1m", "1s"): parsed once each.
_seconds = functools.lru_cache(maxsize=256)(parse_duration)


def _duration(value: Any, where: str, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = _seconds(value) if type(value) is str else parse_duration(value)
    except ValueError as exc:
        raise InvalidSpec(f"{where}: {exc}") from None
    if seconds <= 0:
        raise InvalidSpec(f"{where}: must be > 0")
    return seconds


def _hosts(value: Any, where: str = "spec.hosts") -> tuple[str, ...]:
    hosts: list[str] = []
    for i, item in enumerate(_list(value, where)):
        if not isinstance(item, str) or not item.strip():
            raise InvalidSpec(f"{where}[{i}]: expected a host name, got {item!r}")
        host = normalize_host(item)
        if host != "*" and not _HOST.match(host):
            raise InvalidSpec(f"{where}[{i}]: {item!r} is not a host name or *.suffix wildcard")
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def _path_prefixes(value: Any, where: str = "spec.pathPrefixes") -> tuple[str, ...]:
    """Each prefix as whole path segments: `/api`, `/api/` and `/api//` are one prefix, `/api` (the add-on
    trims slashes off its keys too); `/` is every path. Envoy's segment-separated prefixes reject `?` and `#`."""
    prefixes: list[str] = []
    for i, item in enumerate(_list(value, where)):
        if not isinstance(item, str) or not item.startswith("/"):
            raise InvalidSpec(f"{where}[{i}]: must start with '/', got {item!r}")
        if "?" in item or "#" in item:
            raise InvalidSpec(f"{where}[{i}]: a path prefix has no query or fragment, got {item!r}")
        prefix = "/" + item.strip("/")
        if prefix not in prefixes:
            prefixes.append(prefix)
    return tuple(prefixes)


def _headers(value: Any, where: str = "spec.headers") -> tuple[HeaderMatch, ...]:
    matches: list[HeaderMatch] = []
    for i, item in enumerate(_list(value, where)):
        entry = _mapping(item, f"{where}[{i}]")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidSpec(f"{where}[{i}].name: required")
        header_value = entry.get("value")
        if header_value is not None and not isinstance(header_value, str):
            raise InvalidSpec(f"{where}[{i}].value: expected a string, got {header_value!r}")
        matches.append(HeaderMatch(name.strip().lower(), header_value))
    return tuple(matches)


def _port(ref: Mapping[str, Any], where: str, required: bool) -> tuple[int | None, str | None]:
    port = ref.get("port")
    port_name = ref.get("portName")
    if port is not None and port_name is not None:
        raise InvalidSpec(f"{where}: set either port or portName, not both")
    if port is None and port_name is None:
        if required:
            raise InvalidSpec(f"{where}: one of port or portName is required")
        return None, None
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidSpec(f"{where}.port: expected 1..65535, got {port!r}")
        return port, None
    if not isinstance(port_name, str) or not port_name:
        raise InvalidSpec(f"{where}.portName: expected a port name, got {port_name!r}")
    return None, port_name


def _scale_target_ref(value: Any) -> ScaleTargetRef:
    where = "spec.scaleTargetRef"
    if value is None:
        raise InvalidSpec(f"{where}: required")
    ref = _mapping(value, where)
    service = ref.get("service")
    if not isinstance(service, str) or not service:
        raise InvalidSpec(f"{where}.service: required")
    _dns_label(service, f"{where}.service")
    name = ref.get("name") or ref.get("deployment")
    if not isinstance(name, str) or not name:
        raise InvalidSpec(f"{where}.name: required")
    port, port_name = _port(ref, where, required=True)
    kind = ref.get("kind") or "Deployment"
    api_version = ref.get("apiVersion") or "apps/v1"
    if not isinstance(kind, str) or not isinstance(api_version, str):
        raise InvalidSpec(f"{where}: kind and apiVersion must be strings")
    return ScaleTargetRef(name, service, port, port_name, kind, api_version)


def _scaling_metric(spec: Mapping[str, Any]) -> ScalingMetric:
    where = "spec.scalingMetric"
    metric = _mapping(spec.get("scalingMetric"), where)
    rate = metric.get("requestRate")
    concurrency = metric.get("concurrency")
    if rate is not None and concurrency is not None:
        raise InvalidSpec(f"{where}: set either requestRate or concurrency, not both")
    if rate is not None:
        rate_spec = _mapping(rate, f"{where}.requestRate")
        window = _duration(rate_spec.get("window"), f"{where}.requestRate.window", DEFAULT_WINDOW_SECONDS)
        granularity = _duration(
            rate_spec.get("granularity"), f"{where}.requestRate.granularity", DEFAULT_GRANULARITY_SECONDS
        )
        if granularity > window:
            raise InvalidSpec(f"{where}.requestRate: granularity must not exceed window")
        target = _positive_number(
            rate_spec.get("targetValue"), f"{where}.requestRate.targetValue", DEFAULT_TARGET_VALUE
        )
        return ScalingMetric(MetricKind.REQUEST_RATE, target, window, granularity)
    if concurrency is not None:
        target = _positive_number(
            _mapping(concurrency, f"{where}.concurrency").get("targetValue"),
            f"{where}.concurrency.targetValue",
            DEFAULT_TARGET_VALUE,
        )
        return ScalingMetric(MetricKind.CONCURRENCY, target)
    legacy = spec.get("targetPendingRequests")
    target = _positive_number(legacy, "spec.targetPendingRequests", DEFAULT_TARGET_VALUE)
    return ScalingMetric(MetricKind.CONCURRENCY, target)


def _replicas(spec: Mapping[str, Any], which: str, default: int) -> int:
    replicas = _mapping(spec.get("replicas"), "spec.replicas")
    return _int(replicas.get(which), f"spec.replicas.{which}", default)


def _max_replicas(spec: Mapping[str, Any]) -> int:
    low = _replicas(spec, "min", DEFAULT_MIN_REPLICAS)
    high = _replicas(spec, "max", DEFAULT_MAX_REPLICAS)
    if high < 1:
        raise InvalidSpec("spec.replicas.max: must be >= 1")
    if high < low:
        raise InvalidSpec(f"spec.replicas: max ({high}) must be >= min ({low})")
    return high


def _timeout(spec: Mapping[str, Any], which: str) -> float | None:
    if "timeouts" not in spec:
        return None
    timeouts = _mapping(spec.get("timeouts"), "spec.timeouts")
    value = timeouts.get(which)
    return None if value is None else _duration(value, f"spec.timeouts.{which}", 0.0)


def _failover(value: Any) -> FailoverRef | None:
    if value is None:
        return None
    where = "spec.coldStartTimeoutFailoverRef"
    ref = _mapping(value, where)
    service = ref.get("service")
    if not isinstance(service, str) or not service:
        raise InvalidSpec(f"{where}.service: required")
    port, port_name = _port(ref, where, required=True)
    timeout = _int(ref.get("timeoutSeconds"), f"{where}.timeoutSeconds", DEFAULT_FAILOVER_TIMEOUT_SECONDS, 1)
    return FailoverRef(service, port, port_name, timeout)


def _placeholder(value: Any) -> PlaceholderConfig | None:
    if value is None:
        return None  # most objects: nothing to check
    where = "spec.placeholderConfig"
    config = _mapping(value, where)
    enabled = config.get("enabled", False)
    if not isinstance(enabled, bool):
        raise InvalidSpec(f"{where}.enabled: expected true or false, got {enabled!r}")
    status = _int(config.get("statusCode"), f"{where}.statusCode", DEFAULT_PLACEHOLDER_STATUS, 100)
    if status > 599:
        raise InvalidSpec(f"{where}.statusCode: expected 100..599, got {status}")
    if status < 200:
        # Envoy sends no informational status as a final answer.
        raise InvalidSpec(f"{where}.statusCode: zerohop answers with a final status, 200..599, got {status}")
    refresh = _int(config.get("refreshInterval"), f"{where}.refreshInterval", DEFAULT_PLACEHOLDER_REFRESH_SECONDS, 1)
    if refresh > 60:
        raise InvalidSpec(f"{where}.refreshInterval: expected 1..60 seconds, got {refresh}")
    headers = []
    for name, header_value in _mapping(config.get("headers"), f"{where}.headers").items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidSpec(f"{where}.headers: {name!r} is not an HTTP header name")
        if not isinstance(header_value, str) or any(c in header_value for c in "\r\n\0"):
            raise InvalidSpec(f"{where}.headers.{name}: expected a one-line string, got {header_value!r}")
        headers.append((name.lower(), header_value))
    content = config.get("content")
    if content is not None and not isinstance(content, str):
        raise InvalidSpec(f"{where}.content: expected a string, got {type(content).__name__}")
    if not enabled:
        return None
    return PlaceholderConfig(status, refresh, tuple(headers), compile_template(content or ""))


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    mapping = _mapping(value, where)
    return {str(k): str(v) for k, v in mapping.items()}
