"""The local provider's config file: HTTPScaledObject documents plus, per scale target, a `LocalWorkload`
saying how to run one replica as a local process.

```yaml
apiVersion: http.keda.sh/v1alpha1          # unchanged from Kubernetes
kind: HTTPScaledObject
metadata: {name: app}
spec:
  hosts: [app.localhost]
  scaleTargetRef: {name: app, service: app, port: 8080}
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {name: app}                      # = scaleTargetRef.name, same namespace
spec:
  command: [python3, -m, http.server, "{port}"]
  portRange: 18000-18009                   # or port: 18000 (one replica at most)
  readinessProbe: {httpGet: {path: /}, periodSeconds: 0.05}
```

InterceptorRoutes (`http.keda.sh/v1beta1`) work too, with the KEDA ScaledObject whose `external-push` trigger
names the route (`metadata.interceptorRoute`), as on Kubernetes: its `scaleTargetRef.name` is the LocalWorkload
to run and `minReplicaCount`, `maxReplicaCount`, `cooldownPeriod`, `initialCooldownPeriod` bound it. A route no
ScaledObject names runs the LocalWorkload of its own name, 0..100 replicas.

A target's fallback (`coldStartTimeoutFailoverRef`, where held requests go once its timeout runs out) is
another target of the same file: the one whose `scaleTargetRef` has the same `service` and `port` (or
`portName`) in the same namespace. zerohop runs its replicas like any target's (give it `replicas.min: 1` to
keep it up); a fallback no target serves is a warning, and its requests get the 504.

A canary (an 80/20 split between two versions, each its own target scaled from zero by its own share) is two
targets matching the same requests, each with a `zerohop.dev/weight` annotation, the only thing zerohop adds to
the add-on's documents (its schema has no weight, and on Kubernetes the HTTPRoute or VirtualService splits):

```yaml
kind: HTTPScaledObject
metadata: {name: backend-v1, annotations: {zerohop.dev/weight: "80"}}
spec: {hosts: [backend.localhost], scaleTargetRef: {name: backend-v1, service: backend-v1, port: 8080}}
---
kind: HTTPScaledObject
metadata: {name: backend-v2, annotations: {zerohop.dev/weight: "20"}}
spec: {hosts: [backend.localhost], scaleTargetRef: {name: backend-v2, service: backend-v2, port: 8080}}
```

Routes of several targets with the same host, path prefix and headers become one Envoy route with
`weighted_clusters` (weights are relative; 0 sends a version nothing); Envoy picks the version and zerohop
reads the cluster it picked, so each version is woken, counted and scaled only by the requests sent to it. A
shared match without a weight on every target (or weights summing to 0) is a warning, and the first target in
the file takes all of its requests. A weight is an integer 0..1000000, else the document is rejected.

Errors name the file, the document (index, kind and name) and the field; a field neither kind has is an error
that names the nearest valid one (`spec.host: unknown field; did you mean hosts?`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from extproc.core import httpso, iroute
from extproc.core.fieldcheck import LEAF, Tree, unknown_fields
from extproc.core.httpso import OBJECT_META, InvalidSpec, ScaledTarget, TargetKey
from extproc.envoy.config import WEIGHT_ANNOTATION, is_split, route_weight, split_routes, target_routes

API_VERSION = "zerohop.dev/v1alpha1"
KIND = "LocalWorkload"
SCALED_OBJECT = "ScaledObject"
# Kinds whose documents are targets (a broken one keeps its last good version on a reload).
TARGET_KINDS = (httpso.KIND, iroute.KIND)

_PROBE: Tree = {
    "httpGet": {"path": LEAF},
    "tcpSocket": {},
    "periodSeconds": LEAF,
    "timeoutSeconds": LEAF,
    "initialDelaySeconds": LEAF,
}
WORKLOAD_FIELDS: Tree = {
    "apiVersion": LEAF,
    "kind": LEAF,
    "metadata": OBJECT_META,
    "spec": {
        "command": LEAF,
        "port": LEAF,
        "portRange": LEAF,
        "host": LEAF,
        "env": LEAF,
        "workingDir": LEAF,
        "readinessProbe": _PROBE,
        "startupTimeoutSeconds": LEAF,
        "terminationGracePeriodSeconds": LEAF,
    },
}


class ConfigError(ValueError):
    """The config file cannot be used at all (unreadable, not YAML, no valid target)."""


@dataclass(frozen=True, slots=True)
class ReadinessProbe:
    """`httpGet` (any status below 400 is ready) or `tcpSocket` (a connection is accepted)."""

    http_path: str | None = "/"
    period: float = 0.1
    timeout: float = 1.0
    initial_delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Workload:
    """How to run one replica of a scale target locally."""

    key: TargetKey
    command: tuple[str, ...]
    ports: range
    host: str = "127.0.0.1"
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: Path | None = None
    readiness: ReadinessProbe = ReadinessProbe()
    startup_timeout: float = 60.0
    termination_grace: float = 5.0

    def argv(self, port: int) -> list[str]:
        return [part.replace("{port}", str(port)) for part in self.command]


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong in a config file: where (file, 1-based document index when one document is at fault,
    its kind and name) and what; `error` documents are left out (or kept at their last good version)."""

    source: str
    document: int | None
    kind: str | None
    name: str | None
    message: str
    severity: str = "error"

    @classmethod
    def of_target(cls, source: str, target: ScaledTarget, message: str, severity: str = "error") -> Problem:
        """A problem of one target as a whole, not of the document it came from."""
        return cls(source, None, target.kind, str(target.key), message, severity)

    def __str__(self) -> str:
        if self.document is None:
            return f"{self.source}: {self.kind} {self.name}: {self.message}"
        if self.kind is None and self.name is None:
            return f"{self.source}: document {self.document}: {self.message}"
        return f"{self.source}: document {self.document} ({self.kind or '?'} {self.name or '?'}): {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "document": self.document,
            "kind": self.kind,
            "name": self.name,
            "message": self.message,
            "severity": self.severity,
        }


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """The valid contents of a config file, and why each invalid document was left out.

    `empty`: the file had no document at all; `kept`: targets whose broken document was replaced by its last
    good version on a reload."""

    targets: tuple[ScaledTarget, ...]
    workloads: Mapping[TargetKey, Workload]
    problems: tuple[Problem, ...] = ()
    empty: bool = False
    kept: tuple[TargetKey, ...] = ()

    @property
    def by_key(self) -> dict[TargetKey, ScaledTarget]:
        return {target.key: target for target in self.targets}

    def workload_for(self, target: ScaledTarget) -> Workload | None:
        return self.workloads.get(TargetKey(target.key.namespace, target.scale_target.name))


def load(path: Path, previous: LocalConfig | None = None) -> LocalConfig:
    """Read and validate a config file. Raises ConfigError when nothing usable is in it.

    With `previous` (a reload), a document that fails validation keeps its last good version: see `parse`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse(text, str(path), previous)


def parse(text: str, source: str = "<config>", previous: LocalConfig | None = None) -> LocalConfig:
    """Validate every document; an invalid one is reported in `problems` and left out, or, on a reload
    (`previous` given), replaced by its last good version when the broken document still says which object
    it is. A broken document that does not (no readable kind or name) keeps every previous target."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    targets: dict[TargetKey, ScaledTarget] = {}
    workloads: dict[TargetKey, Workload] = {}
    problems: list[Problem] = []
    kept: list[TargetKey] = []
    routes: dict[TargetKey, list[iroute.Binding]] = {}
    unidentified = False
    last_good = previous.by_key if previous is not None else {}
    for index, document in enumerate(documents):
        kind, name = _identity(document)
        try:
            if not isinstance(document, Mapping):
                raise InvalidSpec("expected a mapping with apiVersion, kind, metadata and spec")
            if kind in TARGET_KINDS:
                parser = httpso.parse if kind == httpso.KIND else iroute.parse
                target = parser(document, strict=True)
                try:
                    route_weight(target)
                except ValueError as exc:
                    raise InvalidSpec(str(exc)) from None
                if target.key in targets:
                    # One name space for both kinds, as in the add-on (and as KEDA's trigger names them).
                    raise InvalidSpec(
                        f"duplicate {kind} {target.key} (HTTPScaledObjects and InterceptorRoutes share names)"
                    )
                targets[target.key] = target
            elif kind == SCALED_OBJECT:
                named = iroute.bindings(document)
                if not named:
                    raise InvalidSpec(
                        f"no external-push trigger names an InterceptorRoute ({iroute.TRIGGER_KEY}); ignored"
                    )
                for binding in named:
                    routes.setdefault(binding.route, []).append(binding)
            elif kind == KIND:
                workload = _workload(document)
                if workload.key in workloads:
                    raise InvalidSpec(f"duplicate LocalWorkload {workload.key}")
                workloads[workload.key] = workload
            else:
                raise InvalidSpec(
                    f"kind: expected one of {', '.join((*TARGET_KINDS, SCALED_OBJECT, KIND))}, got {kind!r}"
                )
        except InvalidSpec as exc:
            message = str(exc)
            key = _key(document) if kind in (*TARGET_KINDS, KIND) else None
            if previous is not None and key is not None:
                if kind in TARGET_KINDS and key in last_good and key not in targets:
                    targets[key] = last_good[key]
                    kept.append(key)
                    message += "; keeping its last good version"
                elif kind == KIND and key in previous.workloads and key not in workloads:
                    workloads[key] = previous.workloads[key]
                    message += "; keeping its last good version"
            elif key is None:
                unidentified = True
            problems.append(Problem(source, index + 1, kind, name, message))
    if previous is not None and unidentified:
        # Which target the broken document was is unknown: remove nothing until the file is clean.
        for key, target in last_good.items():
            if key not in targets:
                targets[key] = target
                kept.append(key)
        for key, workload in previous.workloads.items():
            workloads.setdefault(key, workload)
    valid: list[ScaledTarget] = []
    for parsed in targets.values():
        bound = _bound(parsed, routes.pop(parsed.key, []), source, problems) if parsed.kind == iroute.KIND else parsed
        if bound is None:
            continue
        target = bound
        workload_key = TargetKey(target.key.namespace, target.scale_target.name)
        found = workloads.get(workload_key)
        if found is None:
            problems.append(
                Problem.of_target(
                    source,
                    target,
                    f"no LocalWorkload {workload_key} (scaleTargetRef.name) says how to run it; left out",
                )
            )
            continue
        ports = len(found.ports)
        if target.max_replicas > ports:
            problems.append(
                Problem.of_target(
                    source,
                    target,
                    f"replicas.max {target.max_replicas} exceeds the {ports} port(s) of LocalWorkload "
                    f"{workload_key}; at most {ports} will run",
                    severity="warning",
                )
            )
        valid.append(target)
    for route, bindings in routes.items():
        names = ", ".join(str(b.scaled_object) for b in bindings)
        problems.append(
            Problem(source, None, SCALED_OBJECT, names, f"names InterceptorRoute {route}, which is not in the file")
        )
    problems += _fallback_problems(source, valid)
    problems += _split_problems(source, valid)
    if not valid and documents:
        raise ConfigError(
            "no usable HTTPScaledObject or InterceptorRoute:\n  "
            + "\n  ".join([str(p) for p in problems] or ["(empty)"])
        )
    return LocalConfig(tuple(valid), workloads, tuple(problems), empty=not documents, kept=tuple(kept))


def _bound(
    target: ScaledTarget, bindings: list[iroute.Binding], source: str, problems: list[Problem]
) -> ScaledTarget | None:
    """A route scaling what its ScaledObject names, or (no ScaledObject) the LocalWorkload of its own name."""
    if len(bindings) > 1:
        names = ", ".join(str(b.scaled_object) for b in bindings)
        problems.append(Problem.of_target(source, target, f"named by several ScaledObjects ({names}); left out"))
        return None
    binding = bindings[0] if bindings else iroute.Binding(target.key, target.key, target.key.name)
    return iroute.bind(target, binding)


def _fallback_problems(source: str, targets: list[ScaledTarget]) -> list[Problem]:
    """A local fallback (`coldStartTimeoutFailoverRef`) is another target of the same file: the one whose
    `scaleTargetRef` names the same Service and port in the same namespace (its replicas serve the fallback)."""
    served = {
        (t.key.namespace, t.scale_target.service, t.scale_target.port or t.scale_target.port_name) for t in targets
    }
    problems = []
    for target in targets:
        ref = target.failover
        field = "coldStartTimeoutFailoverRef" if target.kind == httpso.KIND else "coldStart.fallback"
        if ref is not None and (target.key.namespace, ref.service, ref.port or ref.port_name) not in served:
            problems.append(
                Problem.of_target(
                    source,
                    target,
                    f"{field} names Service {ref.service} port {ref.port or ref.port_name}, which no target in "
                    "this file serves (scaleTargetRef.service or target.service, and port); requests held past "
                    "its timeout get 504",
                    severity="warning",
                )
            )
    return problems


def _split_problems(source: str, targets: list[ScaledTarget]) -> list[Problem]:
    """Targets matching the same requests (host, path prefix, headers) are a canary only when each carries a
    `zerohop.dev/weight` and the weights sum above 0; otherwise the first in the file takes every request of
    that match, which is said once per match."""
    problems = []
    kinds = {target.key: target.kind for target in targets}
    for group in split_routes(target_routes(targets)):
        if len(group) < 2 or is_split(group):
            continue
        first, rest = group[0], group[1:]
        names = ", ".join(str(spec.target) for spec in rest)
        where = f"host {first.host} path {first.prefix}" + (" with its headers" if first.headers else "")
        weights = [spec.weight for spec in group]
        why = "the weights sum to 0" if None not in weights else f"not every one has a {WEIGHT_ANNOTATION} annotation"
        problems.append(
            Problem(
                source,
                None,
                kinds.get(first.target) if first.target is not None else None,
                str(first.target),
                f"shares {where} with {names}, but {why}: it takes all of those requests (set "
                f"{WEIGHT_ANNOTATION} on each to split them)",
                severity="warning",
            )
        )
    return problems


def _identity(document: Any) -> tuple[str | None, str | None]:
    if not isinstance(document, Mapping):
        return None, None
    kind = document.get("kind")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return (kind if isinstance(kind, str) else None), (name if isinstance(name, str) else None)


def _key(document: Any) -> TargetKey | None:
    """The namespace/name a (possibly invalid) document names, when it names one."""
    _kind, name = _identity(document)
    if not name:
        return None
    metadata = document["metadata"]
    namespace = metadata.get("namespace") or "default"
    return TargetKey(namespace, name) if isinstance(namespace, str) else None


def _number(value: Any, where: str, default: float, minimum: float = 0.0) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise InvalidSpec(f"{where}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def _ports(spec: Mapping[str, Any]) -> range:
    port = spec.get("port")
    port_range = spec.get("portRange")
    if (port is None) == (port_range is None):
        raise InvalidSpec("spec: set exactly one of port or portRange")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidSpec(f"spec.port: expected 1..65535, got {port!r}")
        return range(port, port + 1)
    low, sep, high = str(port_range).partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise InvalidSpec(f"spec.portRange: expected FIRST-LAST, got {port_range!r}") from None
    if not 0 < first <= last < 65536:
        raise InvalidSpec(f"spec.portRange: expected 1 <= FIRST <= LAST <= 65535, got {port_range!r}")
    return range(first, last + 1)


def _probe(value: Any) -> ReadinessProbe:
    if value is None:
        return ReadinessProbe()
    if not isinstance(value, Mapping):
        raise InvalidSpec("spec.readinessProbe: expected an object")
    http_get = value.get("httpGet")
    tcp = value.get("tcpSocket")
    if http_get is not None and tcp is not None:
        raise InvalidSpec("spec.readinessProbe: set httpGet or tcpSocket, not both")
    path: str | None = "/"
    if tcp is not None:
        path = None
    elif http_get is not None:
        if not isinstance(http_get, Mapping):
            raise InvalidSpec("spec.readinessProbe.httpGet: expected an object")
        path = str(http_get.get("path", "/"))
        if not path.startswith("/"):
            raise InvalidSpec(f"spec.readinessProbe.httpGet.path: must start with '/', got {path!r}")
    return ReadinessProbe(
        http_path=path,
        period=_number(value.get("periodSeconds"), "spec.readinessProbe.periodSeconds", 0.1, 0.001),
        timeout=_number(value.get("timeoutSeconds"), "spec.readinessProbe.timeoutSeconds", 1.0, 0.001),
        initial_delay=_number(value.get("initialDelaySeconds"), "spec.readinessProbe.initialDelaySeconds", 0.0),
    )


def _workload(document: Mapping[str, Any]) -> Workload:
    unknown = unknown_fields(document, WORKLOAD_FIELDS)
    if unknown:
        raise InvalidSpec("; ".join(str(problem) for problem in unknown))
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise InvalidSpec(f"apiVersion: expected {API_VERSION}, got {api_version!r}")
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise InvalidSpec("metadata.name: required")
    key = TargetKey(str(metadata.get("namespace") or "default"), metadata["name"])
    spec = document.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidSpec("spec: required")
    command = spec.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(p, str | int | float) for p in command):
        raise InvalidSpec("spec.command: expected a non-empty list of strings, e.g. [python3, app.py, '{port}']")
    env = spec.get("env") or {}
    if not isinstance(env, Mapping):
        raise InvalidSpec("spec.env: expected a mapping of NAME: value")
    working_dir = spec.get("workingDir")
    return Workload(
        key=key,
        command=tuple(str(part) for part in command),
        ports=_ports(spec),
        host=str(spec.get("host", "127.0.0.1")),
        env={str(k): str(v) for k, v in env.items()},
        working_dir=Path(working_dir) if working_dir else None,
        readiness=_probe(spec.get("readinessProbe")),
        startup_timeout=_number(spec.get("startupTimeoutSeconds"), "spec.startupTimeoutSeconds", 60.0, 0.1),
        termination_grace=_number(spec.get("terminationGracePeriodSeconds"), "spec.terminationGracePeriodSeconds", 5.0),
    )
