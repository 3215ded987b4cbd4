"""xDS files for Envoy's `path_config_source`: routes (RDS), clusters (CDS) and one endpoints file (EDS) per
cluster, each replaced atomically by rename so Envoy's directory watch picks it up.

This is how a plain Envoy learns targets and replicas from zerohop the way a gateway learns them from
istiod. Files are written deterministically, so an unchanged resource is byte-identical and Envoy keeps it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from extproc.envoy.config import CDS_FILE, RDS_FILE, eds_file_name, route_configuration

CLA_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_CONFIGURATION_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def load_assignment(cluster: str, endpoints: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """A ClusterLoadAssignment of the cluster's ready endpoints, all HEALTHY."""
    lb_endpoints = [
        {
            "endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}},
            "health_status": "HEALTHY",
        }
        for host, port in sorted(endpoints)
    ]
    return {"@type": CLA_TYPE, "cluster_name": cluster, "endpoints": [{"lb_endpoints": lb_endpoints}]}


class XdsFiles:
    """Writes DiscoveryResponse files into one directory, which the gateway Envoy watches."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._version = 0
        # version_info of the last route file written, which the gateway reports back once it has loaded it.
        # Envoy keeps the version it has when a file's resources are unchanged, so an unchanged route
        # configuration is not written again: its version could never be confirmed.
        self.routes_version = ""
        self._routes: list[dict[str, Any]] | None = None

    def _write(self, name: str, resources: Sequence[Mapping[str, Any]]) -> str:
        self._version += 1
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        document = {"version_info": str(self._version), "resources": list(resources)}
        temporary.write_text(json.dumps(document, sort_keys=True))
        os.replace(temporary, final)
        return str(self._version)

    def prepare(self) -> None:
        """Create empty route and cluster files if missing: Envoy refuses to start on a missing file, and
        it may well start before zerohop has written its own."""
        if not (self.directory / CDS_FILE).exists():
            self.write_clusters([])
        if not (self.directory / RDS_FILE).exists():
            self.write_routes(route_configuration([]))

    def write_endpoints(self, cluster: str, endpoints: Iterable[tuple[str, int]]) -> None:
        self._write(eds_file_name(cluster), [load_assignment(cluster, endpoints)])

    def write_clusters(self, clusters: Iterable[Mapping[str, Any]]) -> None:
        self._write(CDS_FILE, [{"@type": CLUSTER_TYPE, **cluster} for cluster in clusters])

    def write_routes(self, route_configuration: Mapping[str, Any]) -> None:
        resources = [{"@type": ROUTE_CONFIGURATION_TYPE, **route_configuration}]
        if resources == self._routes and (self.directory / RDS_FILE).exists():
            return
        self._routes = resources
        self.routes_version = self._write(RDS_FILE, resources)
