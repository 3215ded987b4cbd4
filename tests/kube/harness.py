"""zerohop with the Kubernetes provider against the API emulator: builders and a server context manager."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from extproc.app.server import ZerohopServer
from extproc.app.settings import ProviderKind, Settings
from extproc.core.httpso import TargetKey
from extproc.core.warmpath import WarmPathMode
from extproc.providers.kubernetes.api import KubeApi
from tests.kubeemu import KubeEmulator
from tests.kubeemu.manifests import deployment, service

HTTPSO = "http.keda.sh/v1alpha1"
KEDA = "keda.sh/v1alpha1"


def httpso(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hosts": [f"{name}.test"],
        "scaleTargetRef": {"name": name, "kind": "Deployment", "apiVersion": "apps/v1", "service": name, "port": 8080},
        "replicas": {"min": 0, "max": 5},
    }
    body.update(spec)
    return {
        "apiVersion": HTTPSO,
        "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def workload(emu: KubeEmulator, name: str, namespace: str = "default", *, target_port: int = 18080) -> None:
    """A Deployment at zero replicas and its Service (port 8080 -> target_port)."""
    emu.create(deployment(name, namespace, replicas=0))
    emu.create(
        service(name, namespace, ports=[{"name": "http", "port": 8080, "targetPort": target_port, "protocol": "TCP"}])
    )


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "provider": ProviderKind.KUBERNETES,
        "ext_proc_address": "127.0.0.1:0",
        "scaler_address": "127.0.0.1:0",
        "admin_address": "127.0.0.1:0",
        "peer_address": "127.0.0.1:0",
        "pod_name": "zerohop-0",
        "propagation_delay": 0.05,
        # Every request asks zerohop unless a test opens the warm path (test_warm_path.py).
        "warm_path": WarmPathMode.EXT_PROC,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def zerohop(emu: KubeEmulator, **overrides: Any) -> AsyncIterator[ZerohopServer]:
    api = KubeApi(emu.api_client())
    server = ZerohopServer(settings(**overrides), kube_api=api)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await api.close()


def target_keys(server: ZerohopServer) -> set[str]:
    return {str(state.key) for state in server.core.registry}


def key(name: str, namespace: str = "default") -> TargetKey:
    return TargetKey(namespace, name)


def ready_condition(emu: KubeEmulator, name: str, namespace: str = "default") -> dict[str, Any] | None:
    obj = emu.get(HTTPSO, "HTTPScaledObject", name, namespace) or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def gateway_pod_object(name: str, ip: str, *, ready: bool = True) -> dict[str, Any]:
    """A gateway Pod as the API server shows it: selected by `istio=ingressgateway`, Ready, with its IP."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "istio-system", "labels": {"istio": "ingressgateway"}},
        "spec": {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
