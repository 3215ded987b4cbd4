"""zerohop's configuration: one typed, frozen settings object read from flags and `ZEROHOP_*` variables.

Every field is declared once, with its flag, environment variable, parser, default and help text; the CLI,
the README's configuration reference and validation are all derived from these declarations.
Precedence: command-line flag, then environment variable, then default.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from extproc.core.durations import parse_duration
from extproc.core.registry import InFlightMode
from extproc.core.warmpath import WarmPathMode
from extproc.envoy import istio
from extproc.envoy.config import DEFAULT_HOLD_TIMEOUT, MAX_MESSAGE_TIMEOUT_MARGIN, max_message_timeout_for

ENV_PREFIX = "ZEROHOP_"
# ZEROHOP_* variables other commands read (`zerohop status`, the dev tools' Envoy): not misspellings.
OTHER_VARIABLES = ("ZEROHOP_ADMIN_URL", "ZEROHOP_ENVOY_BIN")


class SettingsError(ValueError):
    """A setting has a value zerohop cannot use; the message names the flag and the variable."""


class ProviderKind(enum.Enum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"
    LOGFMT = "logfmt"


def _address(text: str) -> str:
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return text


def _integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def _port_or_zero(text: str) -> int:
    value = _integer(text)
    if not 0 <= value < 65536:
        raise ValueError(f"expected a port 1..65535 or 0, got {value}")
    return value


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 < value < 65536:
        raise ValueError(f"expected a port 1..65535, got {value}")
    return value


def _positive_duration(text: str) -> float:
    if text.strip().startswith("-"):
        raise ValueError(f"must be > 0, got {text.strip()!r}")
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be > 0, got {text!r}")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ports(text: str) -> tuple[int, ...]:
    parts = _names(text)
    if not parts or not all(part.isdigit() and 0 < int(part) < 65536 for part in parts):
        raise ValueError(f"expected ports 1..65535, comma-separated, got {text!r}")
    return tuple(int(part) for part in parts)


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _namespace(text: str) -> str:
    if not _DNS_LABEL.fullmatch(text):
        raise ValueError(f"expected a Kubernetes namespace (lower-case letters, digits, '-'), got {text!r}")
    return text


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(_namespace(name) for name in _names(text))


def _urls(text: str) -> tuple[str, ...]:
    return tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())


def _setting(
    default: Any,
    parse: Callable[[str], Any],
    help: str,
    *,
    group: str,
    metavar: str | None = None,
    choices: Sequence[str] | None = None,
) -> Any:
    return field(
        default=default,
        metadata={"parse": parse, "help": help, "group": group, "metavar": metavar, "choices": choices},
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `zerohop serve` can be told. Build with `Settings.from_args` or `Settings(...)` in tests."""

    provider: ProviderKind = _setting(
        ProviderKind.LOCAL,
        ProviderKind,
        "Where targets and their replicas come from. `kubernetes`: HTTPScaledObjects and EndpointSlices from "
        "the API server. `local`: a config file of HTTPScaledObjects and commands to run as replicas.",
        group="general",
        choices=[p.value for p in ProviderKind],
    )
    config: Path | None = _setting(
        None,
        Path,
        "Local provider: YAML file of HTTPScaledObject, InterceptorRoute (with the ScaledObject naming it) and "
        "LocalWorkload documents (reloaded on change).",
        group="general",
        metavar="FILE",
    )
    ext_proc_address: str = _setting(
        "127.0.0.1:9000",
        _address,
        "Listen address of the ext_proc gRPC server (Envoy connects here). Loopback by default; a gateway on "
        "another host needs e.g. 0.0.0.0:9000 (the Kubernetes manifests and the image set it).",
        group="ports",
    )
    scaler_address: str = _setting(
        "127.0.0.1:9090",
        _address,
        "Listen address of KEDA's external scaler gRPC API. Loopback by default (the built-in autoscaler "
        "calls it there); KEDA in a cluster needs e.g. 0.0.0.0:9090 (the manifests and the image set it).",
        group="ports",
    )
    admin_address: str = _setting(
        "127.0.0.1:9091",
        _address,
        "Listen address of the admin HTTP server (/healthz, /readyz, /status, /metrics, the status page at /).",
        group="ports",
    )
    ext_proc_max_streams: int = _setting(
        20000,
        _positive_int,
        "Open ext_proc streams (one per request zerohop is answering, holding or following to its end) "
        "zerohop serves at once. A stream beyond it is refused at once with gRPC RESOURCE_EXHAUSTED, which "
        "Envoy's `failure_mode_allow: true` turns into the request going on uncounted, rather than queued "
        "behind the others. Must be above --max-held-total.",
        group="grpc",
        metavar="STREAMS",
    )
    grpc_keepalive: float = _setting(
        60.0,
        _positive_duration,
        "zerohop's gRPC servers ping an idle connection this often and close it if the ping is not answered "
        "within 20s, so the streams of a gateway that vanished (node lost, network cut) end and release "
        "their in-flight counts and held slots.",
        group="grpc",
        metavar="DURATION",
    )
    hold_timeout: float = _setting(
        DEFAULT_HOLD_TIMEOUT,
        _positive_duration,
        "How long a request may be held while its target starts (per-route `timeouts.conditionWait` may "
        "shorten it). Then 504 with Retry-After. Envoy's max_message_timeout must be at least this + "
        f"{MAX_MESSAGE_TIMEOUT_MARGIN:g}s.",
        group="holding",
        metavar="DURATION",
    )
    max_held_per_target: int = _setting(
        1000,
        _positive_int,
        "Held requests allowed per target; more get 503 with Retry-After.",
        group="holding",
    )
    max_held_total: int = _setting(
        10000,
        _positive_int,
        "Held requests allowed in total; more get 503 with Retry-After.",
        group="holding",
    )
    retry_after: int = _setting(
        5,
        _positive_int,
        "Seconds in the Retry-After header of 503/504 answers.",
        group="holding",
        metavar="SECONDS",
    )
    rewake_interval: float = _setting(
        2.0,
        _positive_duration,
        "While requests stay held, wake the target again (push to KEDA) at most this often.",
        group="holding",
        metavar="DURATION",
    )
    drain_timeout: float = _setting(
        15.0,
        _positive_duration,
        "On SIGTERM: answer held requests, then wait at most this long for open streams before exiting.",
        group="holding",
        metavar="DURATION",
    )
    in_flight: InFlightMode = _setting(
        InFlightMode.CONCURRENCY,
        InFlightMode,
        "Which warm requests are followed to their end to count in-flight: `concurrency` (targets scaled on "
        "concurrency; one extra message per request) or `all`.",
        group="counting",
        choices=[m.value for m in InFlightMode],
    )
    warm_path: WarmPathMode = _setting(
        WarmPathMode.AUTO,
        WarmPathMode,
        "`open`: a virtual host whose targets are all warm skips ext_proc, its requests counted from the "
        "gateways' stats (local provider: needs --envoy-admin; Kubernetes: needs --manage-envoyfilters and "
        "the gateway pods' stats, --gateway-stats-port). `ext-proc`: every request asks zerohop (exact "
        "per-request in-flight, warm-request spans; the choice with your own, unscoped EnvoyFilter). `auto`: "
        "open where those are given (the shipped manifests and the demo), else ext-proc, saying why at start.",
        group="counting",
        choices=[m.value for m in WarmPathMode],
    )
    open_after: float = _setting(
        3.0,
        parse_duration,
        "--warm-path open: how long a target must have been routable and receiving requests before its "
        "virtual host skips ext_proc.",
        group="counting",
        metavar="DURATION",
    )
    stats_interval: float = _setting(
        1.0,
        _positive_duration,
        "--warm-path open: how often the gateways' stats are read while some virtual host skips ext_proc.",
        group="counting",
        metavar="DURATION",
    )
    envoy_admin: tuple[str, ...] = _setting(
        (),
        _urls,
        "Gateway Envoy admin URL(s), comma-separated. A target counts as routable only once every listed "
        "Envoy has loaded a ready endpoint. Without it the local provider waits --eds-settle-delay; the "
        "Kubernetes provider reads the gateway pods' stats (--gateway-stats-port) instead.",
        group="general",
        metavar="URL[,URL]",
    )
    xds_dir: Path | None = _setting(
        None,
        Path,
        "Local provider: directory of the xDS files (routes, clusters, endpoints) the gateway Envoy watches; "
        "default <state-dir>/xds.",
        group="local provider",
        metavar="DIR",
    )
    state_dir: Path | None = _setting(
        None,
        Path,
        "Local provider: directory for xDS files, replica logs and the records of running replicas, which a "
        "zerohop restarted on it adopts (one zerohop per directory); default a new temporary directory, "
        "removed when zerohop stops.",
        group="local provider",
        metavar="DIR",
    )
    eds_settle_delay: float = _setting(
        0.25,
        parse_duration,
        "Local provider without --envoy-admin: time allowed for Envoy to load a new endpoints file.",
        group="local provider",
        metavar="DURATION",
    )
    autoscale: bool = _setting(
        True,
        _bool,
        "Local provider: run the built-in autoscaler that plays KEDA's part through the scaler API.",
        group="local provider",
    )
    polling_interval: float = _setting(
        1.0,
        _positive_duration,
        "Built-in autoscaler: how often it calls GetMetrics/IsActive (KEDA's pollingInterval).",
        group="local provider",
        metavar="DURATION",
    )
    kubeconfig: Path | None = _setting(
        None,
        Path,
        "Kubernetes provider: kubeconfig file; default in-cluster config, else $KUBECONFIG or ~/.kube/config.",
        group="kubernetes provider",
        metavar="FILE",
    )
    namespaces: tuple[str, ...] = _setting(
        (),
        _namespaces,
        "Kubernetes provider: namespaces to watch for HTTPScaledObjects and InterceptorRoutes, comma-separated; "
        "default all.",
        group="kubernetes provider",
        metavar="NS[,NS]",
    )
    pod_name: str = _setting(
        "",
        str,
        "This replica's pod name (downward API): its identity for leader election and peers.",
        group="kubernetes provider",
        metavar="NAME",
    )
    pod_namespace: str = _setting(
        istio.ZEROHOP_NAMESPACE,
        _namespace,
        "The namespace zerohop runs in (downward API): its Lease, Service and peers live there.",
        group="kubernetes provider",
        metavar="NS",
    )
    pod_ip: str = _setting(
        "",
        str,
        "This replica's pod IP (downward API), so it does not count itself as a peer.",
        group="kubernetes provider",
        metavar="IP",
    )
    service_name: str = _setting(
        istio.SERVICE_NAME,
        str,
        "zerohop's own Service: ScaledObjects point KEDA at its scaler port, peers are its endpoints.",
        group="kubernetes provider",
        metavar="NAME",
    )
    scale_on_wake: bool = _setting(
        True,
        _bool,
        "On the first cold request, patch the target's scale subresource 0 -> max(1, replicas.min) at once "
        "(besides pushing to KEDA); for an InterceptorRoute, the workload and minReplicaCount of the ScaledObject "
        "whose trigger names it. Never scales down or touches a non-zero count.",
        group="kubernetes provider",
    )
    manage_scaledobjects: bool = _setting(
        True,
        _bool,
        "Create and update a KEDA ScaledObject for each HTTPScaledObject (as the add-on's operator does), "
        "unless it is annotated httpscaledobject.keda.sh/skip-scaledobject-creation; and keep scalingMetricHash "
        "in the triggers of users' ScaledObjects that name an InterceptorRoute.",
        group="kubernetes provider",
    )
    leader_election: bool = _setting(
        True,
        _bool,
        "With several replicas, only the holder of the Lease writes ScaledObjects, status and EnvoyFilters.",
        group="kubernetes provider",
    )
    kube_api_qps: int = _setting(
        200,
        _non_negative_int,
        "Kubernetes provider: requests per second to the API server, on average, for each of two budgets: the "
        "leader's writes of ScaledObjects and statuses, and everything else (watches, the Lease, scaling from "
        "zero), so a wake never waits behind a sync. A first sync of N targets writes 2N times: about 2N / QPS "
        "seconds (100 s for 10,000 targets). client-go's default is 5, Karpenter's 200. 0: no client-side "
        "limit (the server's priority and fairness still applies).",
        group="kubernetes provider",
        metavar="QPS",
    )
    kube_api_burst: int = _setting(
        300,
        _positive_int,
        "Kubernetes provider: requests to the API server allowed at once above --kube-api-qps, per budget "
        "(client-go's burst; its default is 10, Karpenter's 300).",
        group="kubernetes provider",
        metavar="N",
    )
    propagation_delay: float = _setting(
        0.5,
        parse_duration,
        "Kubernetes provider: the fallback where a gateway pod's stats cannot be read (or "
        "--gateway-stats-port is 0): release held requests this long after a target's first endpoint turns "
        "ready, and watch the release; doubled after each release the gateway could not route.",
        group="kubernetes provider",
        metavar="DURATION",
    )
    gateway_stats_port: int = _setting(
        istio.GATEWAY_STATS_PORT,
        _port_or_zero,
        "Kubernetes provider: port of each gateway pod's Envoy stats (`/stats/prometheus`; Istio serves them "
        "on 15090). Held requests are released once every Ready pod matching --gateway-selector reports a "
        "healthy endpoint for the target (needs zerohop's stats inclusion, docs/istio.md). 0: do not read "
        "them, use --propagation-delay.",
        group="kubernetes provider",
        metavar="PORT",
    )
    gateway_probe_port: int = _setting(
        8080,
        _port,
        "Kubernetes provider, --warm-path open: the gateway pods' container port serving the first of "
        "--gateway-ports over plain HTTP (Istio's ingress gateway: 8080 for port 80). zerohop confirms each "
        "switch by sending a probe through every Ready pod there.",
        group="kubernetes provider",
        metavar="PORT",
    )
    release_watch: float = _setting(
        10.0,
        parse_duration,
        "After a release zerohop could not confirm on the gateway (a delay passed instead), follow the "
        "target's requests this long; one answered by the gateway's own 503 `no healthy upstream` makes "
        "the target unroutable again, so new requests are held. 0 turns the watch off.",
        group="holding",
        metavar="DURATION",
    )
    manage_envoyfilters: bool = _setting(
        False,
        _bool,
        "Keep an EnvoyFilter that enables ext_proc only on the gateway virtual hosts HTTPScaledObjects name.",
        group="gateway scoping",
    )
    gateway_namespace: str = _setting(
        istio.GATEWAY_NAMESPACE,
        _namespace,
        "Namespace of the gateway and of the EnvoyFilters for it.",
        group="gateway scoping",
        metavar="NS",
    )
    gateway_selector: str = _setting(
        istio.format_selector(istio.INGRESS_GATEWAY_SELECTOR),
        str,
        "Labels selecting the gateway pods (KEY=VALUE[,KEY=VALUE]); for a Gateway API gateway use "
        "gateway.networking.k8s.io/gateway-name=NAME.",
        group="gateway scoping",
        metavar="LABELS",
    )
    gateway_ports: tuple[int, ...] = _setting(
        istio.GATEWAY_PORTS,
        _ports,
        "Gateway server ports whose virtual hosts (HOST:PORT) get the filter.",
        group="gateway scoping",
        metavar="PORT[,PORT]",
    )
    peer_address: str = _setting(
        "0.0.0.0:9092",
        _address,
        "Listen address of the peer API (replicas exchange counts and activations).",
        group="peers",
    )
    peer_timeout: float = _setting(
        0.2,
        _positive_duration,
        "Deadline for a peer's counts when KEDA asks; a late peer's last counts are used instead.",
        group="peers",
        metavar="DURATION",
    )
    peer_stale_after: float = _setting(
        10.0,
        _positive_duration,
        "A peer's last counts are used for at most this long after it stops answering.",
        group="peers",
        metavar="DURATION",
    )
    trace_warm_requests: bool = _setting(
        False,
        _bool,
        "With tracing on (OTEL_* variables), also give warm requests a `zerohop.continue` span. Off by "
        "default: a warm request costs one gRPC round trip and nothing else.",
        group="logging",
    )
    metrics_max_targets: int = _setting(
        1000,
        _non_negative_int,
        "Above this many targets /metrics (and OTLP) leave out the per-target series (14 to 101 per target) "
        "and keep the process-wide ones, with `zerohop_metrics_dropped_targets` saying how many were left "
        "out; 0 leaves them out always. Bounds what one replica sends Prometheus.",
        group="logging",
    )
    history_max_mib: int = _setting(
        64,
        _non_negative_int,
        "Memory for the status page's history (each target's replicas, rate, in flight, held and cold starts, "
        "the last hour at 1 s): an idle target costs ~0.8 KB, a busy one 16 bytes per second it changes; above "
        "this the busiest targets keep fewer of their oldest seconds. 0 turns the history off.",
        group="logging",
        metavar="MIB",
    )
    log_level: str = _setting(
        "info",
        str.lower,
        "Log level.",
        group="logging",
        choices=["debug", "info", "warning", "error"],
    )
    log_format: LogFormat = _setting(
        LogFormat.TEXT,
        LogFormat,
        "Log line format: text, json or logfmt (each carries trace_id on lines that belong to a trace).",
        group="logging",
        choices=[f.value for f in LogFormat],
    )

    def __post_init__(self) -> None:
        _check_listen_addresses(self)
        _check_warm_path(self)
        if self.ext_proc_max_streams <= self.max_held_total:
            raise SettingsError(
                f"{flag('ext_proc_max_streams')} {self.ext_proc_max_streams} must be above "
                f"{flag('max_held_total')} {self.max_held_total}: held requests are open streams too"
            )

    @property
    def max_message_timeout(self) -> float:
        """What Envoy's ext_proc `max_message_timeout` must be for these settings."""
        return max_message_timeout_for(self.hold_timeout)

    @classmethod
    def from_args(
        cls,
        argv: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        prog: str = "zerohop serve",
    ) -> Settings:
        parser = argparse.ArgumentParser(prog=prog)
        add_arguments(parser)
        return from_namespace(parser.parse_args(attach_dash_values(argv)), env)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_ANY_HOST = {"", "0.0.0.0", "::", "*"}


def _listen_overlap(a: str, b: str) -> bool:
    """Whether two HOST:PORT listen addresses would take the same socket (port 0 never does)."""
    host_a, _, port_a = a.rpartition(":")
    host_b, _, port_b = b.rpartition(":")
    if port_a != port_b or port_a in ("", "0"):
        return False
    host_a, host_b = (h.strip("[]").replace("localhost", "127.0.0.1") for h in (host_a, host_b))
    return host_a == host_b or host_a in _ANY_HOST or host_b in _ANY_HOST


def _warm_path_missing(settings: Settings) -> str | None:
    """What `--warm-path open` lacks with these settings (None: nothing)."""
    unscoped = f"with your own EnvoyFilter, set {flag('warm_path')} ext-proc ({env_var('warm_path')})"
    if settings.provider is ProviderKind.KUBERNETES:
        if not settings.manage_envoyfilters:
            return (
                f"{flag('warm_path')} open needs {flag('manage_envoyfilters')} true "
                f"({env_var('manage_envoyfilters')}): zerohop turns ext_proc on and off per virtual host through "
                f"the EnvoyFilter it keeps; {unscoped}"
            )
        if settings.envoy_admin or not settings.gateway_stats_port:
            return (
                f"{flag('warm_path')} open with the Kubernetes provider reads and probes Istio gateway pods: it "
                f"needs {flag('gateway_stats_port')} and no {flag('envoy_admin')}; {unscoped}"
            )
        return None
    if not settings.envoy_admin:
        return (
            f"{flag('warm_path')} open needs {flag('envoy_admin')} ({env_var('envoy_admin')}): zerohop confirms "
            "each switch and counts warm requests from the gateway's admin API"
        )
    return None


def resolve_warm_path(settings: Settings) -> tuple[WarmPathMode, str | None]:
    """The warm path these settings run (`auto` resolved), and why it is `ext-proc` when auto chose it."""
    if settings.warm_path is not WarmPathMode.AUTO:
        return settings.warm_path, None
    missing = _warm_path_missing(settings)
    return (WarmPathMode.EXT_PROC, missing) if missing else (WarmPathMode.OPEN, None)


def _check_warm_path(settings: Settings) -> None:
    if settings.warm_path is WarmPathMode.OPEN:
        missing = _warm_path_missing(settings)
        if missing:
            raise SettingsError(missing)


def _check_listen_addresses(settings: Settings) -> None:
    """Each server needs an address of its own: two on one port would fail to start (or, with SO_REUSEPORT,
    share the connections)."""
    names = ["ext_proc_address", "scaler_address", "admin_address"]
    if settings.provider is ProviderKind.KUBERNETES:
        names.append("peer_address")
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = getattr(settings, first), getattr(settings, second)
            if _listen_overlap(a, b):
                raise SettingsError(
                    f"{flag(second)} {b} and {flag(first)} {a} are the same port: each server needs its own"
                )


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _render_default(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "(none)"
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return f"{value:g}s"
    return str(value)


_METAVARS: dict[Callable[[str], Any], str] = {
    _address: "HOST:PORT",
    _positive_int: "N",
    _port_or_zero: "PORT",
    _bool: "{true,false}",
    _positive_duration: "DURATION",
    parse_duration: "DURATION",
    Path: "PATH",
}


def _metavar(meta: Mapping[str, Any]) -> str | None:
    if meta["metavar"]:
        return str(meta["metavar"])
    if meta["choices"]:
        return "{" + ",".join(meta["choices"]) + "}"
    return _METAVARS.get(meta["parse"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting, grouped, each help line naming its variable and default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in fields(Settings):
        meta = spec.metadata
        group = groups.get(meta["group"])
        if group is None:
            group = groups[meta["group"]] = parser.add_argument_group(meta["group"])
        group.add_argument(
            flag(spec.name),
            dest=spec.name,
            default=None,
            metavar=_metavar(meta),
            help=f"{meta['help']} [{env_var(spec.name)}; default {_render_default(spec.default)}]",
        )


def from_namespace(namespace: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from parsed flags, falling back to `env` (default os.environ), then to defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for spec in fields(Settings):
        raw = getattr(namespace, spec.name, None)
        source = flag(spec.name)
        if raw is None and env.get(env_var(spec.name)):
            raw, source = env[env_var(spec.name)], env_var(spec.name)
        if raw is None:
            continue
        choices = spec.metadata["choices"]
        if choices and str(raw).lower() not in choices:
            raise SettingsError(f"{source}: {raw!r} is not one of {', '.join(choices)}")
        try:
            values[spec.name] = spec.metadata["parse"](str(raw).lower() if choices else raw)
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from None
    return Settings(**values)


def reference_markdown() -> str:
    """The configuration reference table for the README (kept in sync by a test)."""
    lines = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for spec in fields(Settings):
        meaning = spec.metadata["help"].replace("|", "\\|")
        default = _render_default(spec.default)
        lines.append(f"| `{flag(spec.name)}` | `{env_var(spec.name)}` | `{default}` | {meaning} |")
    return "\n".join(lines)


# The parsers `zerohop serve` uses, shared with the other commands that take the same values.
parse_ports = _ports
parse_namespace = _namespace
parse_hold_timeout = _positive_duration


def attach_dash_values(argv: Sequence[str] | None) -> list[str] | None:
    """`--flag -5s` as `--flag=-5s`: argparse takes a value starting with '-' for a flag, so a negative
    value would get "expected one argument" instead of the setting's own message."""
    if argv is None:
        return None
    out: list[str] = []
    for token in argv:
        if out and re.fullmatch(r"-\.?\d.*", token) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def misspelled_variables(env: Mapping[str, str]) -> list[str]:
    """One warning per ZEROHOP_* variable zerohop does not read, naming the nearest one it does."""
    known = [env_var(spec.name) for spec in fields(Settings)] + list(OTHER_VARIABLES)
    warnings = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        # Compared without the prefix every name shares, so the prefix alone makes no match.
        suffixes = [k.removeprefix(ENV_PREFIX) for k in known]
        nearest = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.6)
        hint = f"; did you mean {ENV_PREFIX}{nearest[0]}?" if nearest else ""
        warnings.append(f"{name} is not a zerohop setting and is ignored{hint}")
    return warnings
