"""Builders for the objects tests create most often (plain dicts, as sent on the wire)."""

from __future__ import annotations

from typing import Any

JsonObj = dict[str, Any]


def configmap(
    name: str, namespace: str = "default", *, labels: dict[str, str] | None = None, data: dict[str, str] | None = None
) -> JsonObj:
    md: JsonObj = {"name": name, "namespace": namespace}
    if labels:
        md["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data or {}}


def deployment(
    name: str,
    namespace: str = "default",
    *,
    replicas: int = 1,
    labels: dict[str, str] | None = None,
    containers: list[JsonObj] | None = None,
) -> JsonObj:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": containers
                    or [{"name": "app", "image": "example/app:1", "ports": [{"name": "http", "containerPort": 8080}]}]
                },
            },
        },
    }


def statefulset(
    name: str,
    namespace: str = "default",
    *,
    replicas: int = 1,
    labels: dict[str, str] | None = None,
    service_name: str | None = None,
) -> JsonObj:
    """A StatefulSet shaped like `deployment(...)`, governed by the Service `service_name` (default: `name`)."""
    body = deployment(name, namespace, replicas=replicas, labels=labels)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = service_name or name
    return body


def service(
    name: str, namespace: str = "default", *, selector: dict[str, str] | None = None, ports: list[JsonObj] | None = None
) -> JsonObj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector if selector is not None else {"app": name},
            "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def http_scaled_object(
    name: str,
    namespace: str = "default",
    *,
    host: str = "example.com",
    deployment: str = "app",
    service: str = "app",
    port: int = 8080,
) -> JsonObj:
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [host],
            "scaleTargetRef": {
                "name": deployment,
                "kind": "Deployment",
                "apiVersion": "apps/v1",
                "service": service,
                "port": port,
            },
            "replicas": {"min": 0, "max": 10},
        },
    }


def owner_reference(owner: JsonObj, *, controller: bool = True) -> JsonObj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
