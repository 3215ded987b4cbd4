"""Discovery documents (/api, /api/v1, /apis, /apis/<g>, /apis/<g>/<v>) and /version.

Only the legacy (unaggregated) discovery format is served; clients asking for
aggregated discovery (apidiscovery.k8s.io/v2) fall back to it on the JSON
content type, as they do against older servers.
"""

from __future__ import annotations

import re
from typing import Any

from .registry import SUBRESOURCE_VERBS, Registry, ResourceType

JsonObj = dict[str, Any]

VERSION_INFO: JsonObj = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-kubeemu",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> JsonObj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(registry: Registry, group: str) -> JsonObj:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in registry.versions(group)]
    # Preferred is the newest-looking version: GA over beta over alpha.
    preferred = max(versions, key=lambda v: _version_rank(v["version"]))
    return {"name": group, "versions": versions, "preferredVersion": preferred}


def _version_rank(version: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if m is None:
        return (0, 0, 0)
    stability = {"alpha": 0, "beta": 1, None: 2}[m.group(2)]
    return (stability, int(m.group(1)), int(m.group(3) or 0))


def group_list(registry: Registry) -> JsonObj:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(registry, g) for g in registry.groups()]}


def group(registry: Registry, name: str) -> JsonObj:
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(registry, name)}


def _entry(rt: ResourceType) -> JsonObj:
    entry: JsonObj = {
        "name": rt.plural,
        "singularName": rt.singular_name,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    return entry


def resource_list(registry: Registry, group_name: str, version: str) -> JsonObj:
    resources: list[JsonObj] = []
    for rt in registry.in_group_version(group_name, version):
        resources.append(_entry(rt))
        if rt.status:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
        if rt.scale is not None:
            resources.append(
                {
                    "name": f"{rt.plural}/scale",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group_name}/{version}" if group_name else version,
        "resources": resources,
    }
