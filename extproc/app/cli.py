"""The `zerohop` command: serve, demo, envoy-bootstrap, envoyfilter, version."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from extproc import __version__
from extproc.app import grpcenv, statuscli
from extproc.app import settings as settings_module
from extproc.app.settings import SettingsError, add_arguments, from_namespace
from extproc.envoy import istio as istio_defaults
from extproc.envoy.config import DEFAULT_HOLD_TIMEOUT
from extproc.observability import logs
from extproc.providers.local.config import ConfigError

if TYPE_CHECKING:
    from extproc.core.httpso import ScaledTarget

T = TypeVar("T")
DEFAULT_SELECTOR = istio_defaults.format_selector(istio_defaults.INGRESS_GATEWAY_SELECTOR)
DEFAULT_PORTS = ",".join(map(str, istio_defaults.GATEWAY_PORTS))
DEFAULT_ROOT_NAMESPACE = istio_defaults.GATEWAY_NAMESPACE
DEFAULT_HOLD_TIMEOUT_TEXT = f"{DEFAULT_HOLD_TIMEOUT:g}s"
HOLD_TIMEOUT_HELP = f"zerohop's --hold-timeout (default {DEFAULT_HOLD_TIMEOUT_TEXT})"

DESCRIPTION = """\
zerohop scales HTTP workloads to and from zero from inside an Envoy or Istio gateway, with no extra proxy
hop. Envoy's ext_proc filter asks zerohop about each request's headers: warm targets continue at once,
cold ones are held while they start. KEDA reads the traffic counts through its external scaler API.
"""

EPILOG = """\
commands:
  serve             run the ext_proc server, the KEDA scaler API and a provider
  demo              Envoy + zerohop + a sample app scaled from zero, with a timeline (make demo)
  envoy-bootstrap   print an Envoy bootstrap for a plain-Envoy gateway in front of zerohop
  envoyfilter       print the Istio EnvoyFilter that adds zerohop to a gateway (or, --sidecar, to sidecars)
  status            print the targets of a running zerohop (replicas, traffic, cold starts)
  version           print the version

Every serve setting can also be given as a ZEROHOP_* environment variable (see `zerohop serve --help`).
"""


def run(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where available (measurably cheaper per request), else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    result: int = uvloop.run(coroutine)
    return result


async def _serve(settings_namespace: argparse.Namespace) -> int:
    from extproc.app.server import ZerohopServer
    from extproc.observability.telemetry import Telemetry

    settings = from_namespace(settings_namespace)
    logs.configure(settings.log_level, settings.log_format.value)
    for warning in settings_module.misspelled_variables(os.environ):
        logging.getLogger("extproc.app.cli").warning("%s", warning)
    server = ZerohopServer(settings, telemetry=Telemetry.from_env())
    server.install_signal_handlers()
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    await server.wait()
    return 0


def _option(flag: str, parse: Callable[[str], T], text: str) -> T:
    """A command's option parsed as `serve` parses the same setting; errors name the flag."""
    try:
        return parse(text)
    except ValueError as exc:
        raise SettingsError(f"{flag}: {exc}") from None


def _bootstrap(args: argparse.Namespace) -> int:
    from extproc.envoy.config import GatewayPorts, local_bootstrap, max_message_timeout_for
    from extproc.providers.local.xds_files import XdsFiles

    hold_timeout = _option("--hold-timeout", settings_module.parse_hold_timeout, args.hold_timeout)
    listen_host, _, listen_port = args.listen.rpartition(":")
    ext_host, _, ext_port = args.ext_proc.rpartition(":")
    ports = GatewayPorts(listen_host, int(listen_port), args.admin_port, ext_host, int(ext_port))
    xds_dir = args.xds_dir.resolve()
    # Envoy refuses to start on a missing xDS file; zerohop replaces these when it starts.
    XdsFiles(xds_dir).prepare()
    bootstrap = local_bootstrap(
        ports, xds_dir, max_message_timeout=max_message_timeout_for(hold_timeout), otlp=args.otlp_endpoint
    )
    json.dump(bootstrap, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or "/" in value or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. otel-collector:4317), got {value!r}")
    return host.strip("[]"), int(port)


def _envoyfilter(args: argparse.Namespace) -> int:
    from extproc.envoy import istio

    if args.sidecar:
        return _sidecar_envoyfilter(args)
    if args.workload_selector is not None or args.workload_namespace is not None:
        raise SettingsError("envoyfilter: --workload-selector and --workload-namespace go with --sidecar")
    if args.gateway_name and args.selector is not None:
        raise SettingsError("envoyfilter: --gateway-name and --selector both select the gateway pods; give one")
    if args.gateway_name:
        selector = {istio.GATEWAY_API_LABEL: args.gateway_name}
    else:
        selector = _option("--selector", istio.parse_selector, args.selector or DEFAULT_SELECTOR)
    ports = _option("--ports", settings_module.parse_ports, DEFAULT_PORTS if args.ports is None else args.ports)
    namespace = _option("--namespace", settings_module.parse_namespace, args.namespace)
    gateway_namespace = _option(
        "--gateway-namespace",
        settings_module.parse_namespace,
        DEFAULT_ROOT_NAMESPACE if args.gateway_namespace is None else args.gateway_namespace,
    )
    hold_timeout = _option("--hold-timeout", settings_module.parse_hold_timeout, args.hold_timeout)
    hosts: set[str] | None = set() if args.httpso else None
    parsed = []
    for path, target in _targets_of(args.httpso):
        assert hosts is not None
        parsed.append(target)
        if target.failover is not None and target.failover.port is None:
            print(
                f"zerohop envoyfilter: warning: {path}: HTTPScaledObject {target.key}: its fallback names a "
                "port by name, which only the Service resolves: no failover route (set port, or let zerohop "
                "manage the EnvoyFilter)",
                file=sys.stderr,
            )
        named = [h for h in target.hosts if h != "*"]
        if not named:
            print(
                f"zerohop envoyfilter: warning: {path}: {target.kind} {target.key} names no host "
                "(a catch-all): the scoped filter does not enable it",
                file=sys.stderr,
            )
        hosts.update(named)
    if hosts is not None and not hosts and not args.allow_empty:
        files = ", ".join(str(p) for p in args.httpso)
        raise SettingsError(
            f"envoyfilter: no host found in {files} ({len(parsed)} HTTPScaledObject(s)): the filter would be "
            "disabled on every host, turning zerohop off. Check `spec.hosts`, or pass --allow-empty to print "
            "it anyway."
        )
    document = istio.envoyfilter(
        namespace,
        service_name=args.service_name,
        hold_timeout=hold_timeout,
        gateway_namespace=gateway_namespace,
        selector=selector,
        hosts=sorted(hosts) if hosts is not None else None,
        ports=ports,
        failovers=istio.failover_routes(parsed),
    )
    scope = f"scoped to {len(hosts)} host(s) from {len(args.httpso)} file(s)" if hosts is not None else "all hosts"
    sys.stdout.write(istio.render(document, f"Generated by `zerohop envoyfilter` ({scope})."))
    return 0


def _targets_of(paths: Sequence[Path]) -> list[tuple[Path, ScaledTarget]]:
    """The HTTPScaledObjects and InterceptorRoutes in `paths`, each with the file it came from."""
    from extproc.core import iroute
    from extproc.core.httpso import KIND, InvalidSpec, parse

    found: list[tuple[Path, ScaledTarget]] = []
    for path in paths:
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"{path}: {exc}") from None
        for document in documents:
            kind = document.get("kind")
            if kind not in (KIND, iroute.KIND):
                continue
            try:
                found.append((path, parse(document) if kind == KIND else iroute.parse(document)))
            except InvalidSpec as exc:
                raise SettingsError(f"{path}: {kind} {document.get('metadata', {}).get('name')}: {exc}") from None
    return found


def _sidecar_envoyfilter(args: argparse.Namespace) -> int:
    from extproc.envoy import istio

    for flag, value in (("--selector", args.selector), ("--gateway-name", args.gateway_name)):
        if value is not None:
            raise SettingsError(f"envoyfilter: {flag} selects gateway pods; with --sidecar, use --workload-selector")
    for flag, value in (("--ports", args.ports), ("--gateway-namespace", args.gateway_namespace)):
        if value is not None:
            raise SettingsError(
                f"envoyfilter: {flag} is for gateways; a sidecar's virtual hosts carry the Service port"
            )
    if args.workload_selector is None:
        raise SettingsError(
            "envoyfilter: --sidecar needs --workload-selector KEY=VALUE[,...]: the client workloads whose sidecars "
            "get the filter (an EnvoyFilter without one would reach every sidecar in the mesh)"
        )
    selector = _option("--workload-selector", istio.parse_selector, args.workload_selector)
    workload_namespace = _option(
        "--workload-namespace",
        settings_module.parse_namespace,
        DEFAULT_ROOT_NAMESPACE if args.workload_namespace is None else args.workload_namespace,
    )
    namespace = _option("--namespace", settings_module.parse_namespace, args.namespace)
    hold_timeout = _option("--hold-timeout", settings_module.parse_hold_timeout, args.hold_timeout)
    virtual_hosts: list[str] | None = None
    failovers: list[istio.FailoverRoute] = []
    if args.httpso:
        found = _targets_of(args.httpso)
        failovers = istio.sidecar_failover_routes(target for _, target in found)
        virtual_hosts, unresolved = istio.sidecar_virtual_hosts(target for _, target in found)
        for path, target in found:
            if target in unresolved:
                print(
                    f"zerohop envoyfilter: warning: {path}: {target.kind} {target.key}: its Service port is given "
                    "by name, which only the Service resolves: not enabled (give the port number)",
                    file=sys.stderr,
                )
            if target.failover is not None and target.failover.port is None:
                print(
                    f"zerohop envoyfilter: warning: {path}: {target.kind} {target.key}: its fallback names a "
                    "port by name, which only the Service resolves: no failover route (set port)",
                    file=sys.stderr,
                )
        if not virtual_hosts and not args.allow_empty:
            files = ", ".join(str(p) for p in args.httpso)
            raise SettingsError(
                f"envoyfilter: no Service port found in {files} ({len(found)} target(s)): the filter would be "
                "disabled on every virtual host, turning zerohop off for these sidecars. Pass --allow-empty to "
                "print it anyway."
            )
    document = istio.sidecar_envoyfilter(
        selector,
        namespace,
        service_name=args.service_name,
        hold_timeout=hold_timeout,
        workload_namespace=workload_namespace,
        virtual_hosts=virtual_hosts,
        failovers=failovers,
    )
    scope = (
        f"scoped to {len(virtual_hosts)} Service port(s) from {len(args.httpso)} file(s)"
        if virtual_hosts is not None
        else "every outbound HTTP request"
    )
    comment = f"Generated by `zerohop envoyfilter --sidecar` (sidecars of {istio.format_selector(selector)}; {scope})."
    sys.stdout.write(istio.render(document, comment))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="zerohop",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run zerohop",
        description="Run the ext_proc server (for Envoy), the external scaler API (for KEDA) and a provider.",
        epilog="Example: zerohop serve --config examples/local.yaml --envoy-admin http://127.0.0.1:9901",
    )
    add_arguments(serve)

    demo = commands.add_parser(
        "demo",
        help="run the end-to-end demo",
        description="Start a real Envoy, zerohop and a sample app at 0 replicas; send a cold request, a burst, "
        "then go idle, and print a timeline of holds and replicas.",
    )
    demo.add_argument("--port", type=int, default=10000, help="gateway listen port on 127.0.0.1 (default 10000)")
    demo.add_argument("--keep-running", action="store_true", help="leave everything up for curl until Ctrl-C")
    demo.add_argument("--startup-delay", type=float, default=0.5, help="sample app boot time in seconds")
    demo.add_argument(
        "--canary",
        action="store_true",
        help="two versions of the app behind one host, split 80/20 by Envoy, each woken and scaled by its share",
    )

    boot = commands.add_parser(
        "envoy-bootstrap",
        help="print an Envoy bootstrap for the local provider",
        description="Print (JSON) a plain-Envoy gateway bootstrap: a listener with zerohop's ext_proc filter, "
        "and routes, clusters and endpoints read from the xDS files `zerohop serve` writes to --xds-dir.",
    )
    boot.add_argument("--xds-dir", type=Path, required=True, help="the directory given to `zerohop serve --xds-dir`")
    boot.add_argument("--listen", default="0.0.0.0:10000", help="gateway listen HOST:PORT (default 0.0.0.0:10000)")
    boot.add_argument(
        "--ext-proc", default="127.0.0.1:9000", help="zerohop's ext_proc HOST:PORT (default 127.0.0.1:9000)"
    )
    boot.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port on 127.0.0.1 (default 9901)")
    boot.add_argument("--hold-timeout", default=DEFAULT_HOLD_TIMEOUT_TEXT, help=HOLD_TIMEOUT_HELP)
    boot.add_argument(
        "--otlp-endpoint",
        type=_host_port,
        metavar="HOST:PORT",
        help="trace requests with Envoy's OpenTelemetry tracer, exporting OTLP/gRPC (plaintext) to this "
        "collector; zerohop's hold spans join these traces (docs/observability.md)",
    )

    istio = commands.add_parser(
        "envoyfilter",
        help="print the Istio EnvoyFilter",
        description="Print (YAML) the EnvoyFilter that inserts zerohop's ext_proc filter into Istio gateways. "
        "Given HTTPScaledObject files, the filter is installed disabled and enabled only on the virtual hosts "
        "(HOST:PORT) they name, so other traffic never reaches zerohop. With --sidecar, the same filter goes "
        "into the outbound listeners of client workloads' sidecars (east-west calls), enabled only on the "
        "virtual hosts of the files' Service ports.",
        epilog="Examples: zerohop envoyfilter > envoyfilter.yaml;  "
        "zerohop envoyfilter examples/httpscaledobject.yaml;  "
        "zerohop envoyfilter --gateway-name public app/httpso.yaml other/httpso.yaml | kubectl apply -f -;  "
        "zerohop envoyfilter --sidecar --workload-selector app=frontend backend/httpso.yaml | kubectl apply -f -",
    )
    istio.add_argument(
        "httpso",
        nargs="*",
        type=Path,
        help="YAML files with HTTPScaledObjects or InterceptorRoutes to scope the filter to",
    )
    istio.add_argument(
        "--selector",
        help=f"gateway pod labels KEY=VALUE[,...] (default {DEFAULT_SELECTOR})",
    )
    istio.add_argument(
        "--gateway-name",
        help="a Gateway API gateway's name (selects gateway.networking.k8s.io/gateway-name; not with --selector)",
    )
    istio.add_argument(
        "--gateway-namespace",
        help=f"namespace of the EnvoyFilter (default {DEFAULT_ROOT_NAMESPACE}, the root)",
    )
    istio.add_argument("--ports", help=f"gateway server ports to scope to (default {DEFAULT_PORTS})")
    istio.add_argument(
        "--sidecar",
        action="store_true",
        help="east-west: render the filter for the outbound side of client workloads' sidecars "
        "(SIDECAR_OUTBOUND) instead of a gateway, so their calls to a Service at zero are held while it wakes; "
        "with files, enabled only on the virtual hosts of the targets' Service ports (SVC.NS.svc.cluster.local:PORT). "
        "Needs --workload-selector",
    )
    istio.add_argument(
        "--workload-selector",
        metavar="KEY=VALUE[,...]",
        help="with --sidecar: labels of the client pods whose sidecars get the filter (e.g. app=frontend)",
    )
    istio.add_argument(
        "--workload-namespace",
        metavar="NAMESPACE",
        help=f"with --sidecar: namespace of the EnvoyFilter; its selector picks pods in that namespace only, "
        f"or in every namespace from the root (default {DEFAULT_ROOT_NAMESPACE})",
    )
    istio.add_argument(
        "--namespace", default=istio_defaults.ZEROHOP_NAMESPACE, help="namespace zerohop runs in (default %(default)s)"
    )
    istio.add_argument(
        "--service-name", default=istio_defaults.SERVICE_NAME, help="zerohop's Service name (default %(default)s)"
    )
    istio.add_argument("--hold-timeout", default=DEFAULT_HOLD_TIMEOUT_TEXT, help=HOLD_TIMEOUT_HELP)
    istio.add_argument(
        "--allow-empty",
        action="store_true",
        help="print the filter even when the files name no host (it is then disabled on every host)",
    )

    status = commands.add_parser(
        "status",
        help="print the targets of a running zerohop",
        description=statuscli.DESCRIPTION,
        epilog=statuscli.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    statuscli.add_arguments(status)

    commands.add_parser("version", help="print the version")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's core reads its settings once, when grpc is first imported: this module imports it only below.
    grpcenv.apply()
    args = parser().parse_args(settings_module.attach_dash_values(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "serve":
            return run(_serve(args))
        if args.command == "demo":
            from extproc.dev.demo import run_demo

            return run(
                run_demo(
                    port=args.port,
                    keep_running=args.keep_running,
                    startup_delay=args.startup_delay,
                    canary=args.canary,
                )
            )
        if args.command == "envoy-bootstrap":
            return _bootstrap(args)
        if args.command == "envoyfilter":
            return _envoyfilter(args)
        if args.command == "status":
            return statuscli.main(args)
        if args.command == "version":
            print(__version__)
            return 0
    except (SettingsError, ConfigError) as exc:
        print(f"zerohop: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
