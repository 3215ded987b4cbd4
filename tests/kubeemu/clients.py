"""Pointing the official `kubernetes.aio` client at an emulator (plain http, no auth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes.aio import client

JsonObj = dict[str, Any]


def configuration(url: str) -> client.Configuration:
    return client.Configuration(host=url)


def api_client(url: str) -> client.ApiClient:
    """A new ApiClient for `url`; the caller closes it (`async with` works)."""
    return client.ApiClient(configuration(url))


def kubeconfig_dict(url: str, *, namespace: str = "default", context: str = "kubeemu") -> JsonObj:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": url}}],
        "users": [{"name": context, "user": {}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(url: str, path: str | Path, *, namespace: str = "default", context: str = "kubeemu") -> Path:
    """Write a kubeconfig (JSON is valid YAML) usable by `load_kube_config`."""
    target = Path(path)
    target.write_text(json.dumps(kubeconfig_dict(url, namespace=namespace, context=context), indent=2))
    return target
