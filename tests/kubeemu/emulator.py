"""`KubeEmulator`: the in-process API server tests start, drive and break."""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from kubernetes.aio import client

from . import clients
from .apiserver import MERGE_PATCH, ApiServer, DeleteOptions
from .crds import CrdController
from .endpoints import EndpointsController
from .gc import GarbageCollector
from .kubelet import AddressHook, FakeKubelet
from .listing import ListQuery
from .objects import meta
from .pods import PodController
from .registry import DEFAULT_RESOURCES, Registry, ResourceType
from .requestlog import Fault, RequestLog, RequestRecord
from .server import HttpServer
from .store import Store
from .watch import WatchHub

JsonObj = dict[str, Any]
T = TypeVar("T")

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class KubeEmulator:
    """An emulated Kubernetes API server.

    `auto_create_namespaces=True` (the default) creates a missing namespace on
    the first namespaced create in it, to spare tests the setup; a real server
    answers 404 NotFound for the namespace, which `False` reproduces.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval: float = 1.0,
        auto_create_namespaces: bool = True,
        history_limit: int = 100_000,
        resources: Iterable[ResourceType] = DEFAULT_RESOURCES,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
    ) -> None:
        self.registry = Registry(resources)
        self.store = Store(self.registry, history_limit=history_limit)
        self.api = ApiServer(self.store, auto_create_namespaces=auto_create_namespaces)
        self.hub = WatchHub(self.store, bookmark_interval=bookmark_interval)
        self.request_log = RequestLog()
        self.http = HttpServer(self.api, self.hub, self.request_log, host=host, port=port)
        self.gc = GarbageCollector(self.store)
        self.crds = CrdController(self.store)
        self.crds.seed()
        self.kubelet: FakeKubelet | None = None
        self._endpoints: EndpointsController | None = None
        self._pods: PodController | None = None
        for name in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Serve HTTP (again, on the same port after `stop`); the store is kept."""
        await self.http.start()

    async def stop(self) -> None:
        """Stop serving: open watches are cut and new connections are refused."""
        await self.http.stop()

    async def close(self) -> None:
        await self.stop()
        if self._endpoints is not None:
            self._endpoints.stop()
        if self._pods is not None:
            self._pods.stop()
        if self.kubelet is not None:
            self.kubelet.stop()
        self.gc.close()
        self.crds.close()
        self.hub.close()

    async def __aenter__(self) -> KubeEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def running(self) -> bool:
        return self.http.running

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        return f"http://{self.http.host}:{self.http.port}"

    # -- client helpers ----------------------------------------------------

    def configuration(self) -> client.Configuration:
        return clients.configuration(self.url)

    def api_client(self) -> client.ApiClient:
        """A new `kubernetes.aio` ApiClient for this emulator; close it when done."""
        return clients.api_client(self.url)

    def kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig for `kubernetes.aio.config.load_kube_config`."""
        return clients.write_kubeconfig(self.url, path, namespace=namespace)

    # -- direct store access (same events as HTTP writes) -------------------

    def resource(self, api_version: str, kind: str) -> ResourceType:
        rt = self.registry.by_kind(api_version, kind)
        if rt is None:
            raise LookupError(f"no resource served for {api_version} {kind}")
        return rt

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def create(self, obj: JsonObj) -> JsonObj:
        """Create as a client would, except that `status` is kept."""
        rt = self.resource(obj["apiVersion"], obj["kind"])
        namespace = (meta(obj).get("namespace") or "default") if rt.namespaced else ""
        return self.api.create(rt, namespace, obj, privileged=True)

    def get(self, api_version: str, kind: str, name: str, namespace: str = "default") -> JsonObj | None:
        rt = self.resource(api_version, kind)
        obj = self.store.get(rt.group_resource, namespace if rt.namespaced else "", name)
        return self.api.get(rt, namespace, name) if obj is not None else None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[JsonObj]:
        rt = self.resource(api_version, kind)
        result = self.api.list(rt, namespace, ListQuery(label_selector=label_selector, field_selector=field_selector))
        items: list[JsonObj] = result["items"]
        for item in items:
            item.setdefault("apiVersion", rt.api_version)
            item.setdefault("kind", rt.kind)
        return items

    def update(self, obj: JsonObj) -> JsonObj:
        """Replace, status included; a set resourceVersion must be current (409)."""
        rt = self.resource(obj["apiVersion"], obj["kind"])
        m = meta(obj)
        namespace = (m.get("namespace") or "default") if rt.namespaced else ""
        return self.api.replace(rt, namespace, m["name"], obj, privileged=True)

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: Any,
        namespace: str = "default",
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> JsonObj:
        """Patch (merge patch by default), status included."""
        rt = self.resource(api_version, kind)
        return self.api.patch(
            rt, namespace, name, content_type, json.dumps(patch).encode(), subresource=subresource, privileged=True
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str = "default",
        *,
        propagation_policy: str | None = None,
    ) -> JsonObj:
        rt = self.resource(api_version, kind)
        return self.api.delete(rt, namespace, name, DeleteOptions(propagation_policy=propagation_policy))

    async def wait_until(self, predicate: Callable[[], T], timeout: float = 5.0, *, message: str = "condition") -> T:
        """Re-check `predicate` after every store change until it is truthy."""
        changed = asyncio.Event()
        unsubscribe = self.store.subscribe(lambda _event: changed.set())
        try:
            async with asyncio.timeout(timeout):
                while not (value := predicate()):
                    changed.clear()
                    await changed.wait()
                return value
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}") from None
        finally:
            unsubscribe()

    async def wait_for_object(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str = "default",
        predicate: Callable[[JsonObj], bool] = lambda _obj: True,
        timeout: float = 5.0,
    ) -> JsonObj:
        """Wait until the object exists and satisfies `predicate`; return it."""

        def check() -> JsonObj | None:
            obj = self.get(api_version, kind, name, namespace)
            return obj if obj is not None and predicate(obj) else None

        found = await self.wait_until(check, timeout, message=f"{kind} {namespace}/{name}")
        assert found is not None
        return found

    # -- fault injection and observation -----------------------------------

    def compact(self) -> None:
        """Forget the event history: watches from older versions get 410 Expired."""
        self.store.compact()

    def drop_watches(self) -> int:
        """Abort every open watch connection mid-stream; returns how many."""
        return self.hub.drop_all()

    def close_watches(self) -> int:
        """End every open watch cleanly, as a server-side timeout would."""
        return self.hub.close_all()

    @property
    def open_watches(self) -> int:
        return len(self.hub.sessions)

    @property
    def bookmark_interval(self) -> float:
        return self.hub.bookmark_interval

    @bookmark_interval.setter
    def bookmark_interval(self, seconds: float) -> None:
        self.hub.bookmark_interval = seconds

    def set_latency(self, seconds: float) -> None:
        """Delay every request by `seconds` before it is served."""
        self.http.latency = seconds

    def inject_fault(
        self,
        status: int,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        reason: str = "InternalError",
        message: str = "injected failure",
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> Fault:
        """Answer the next `times` matching requests with a `status` Status body."""
        fault = Fault(status, method, path_contains, times, reason, message, headers or {}, details)
        self.request_log.faults.append(fault)
        return fault

    def inject_throttling(
        self,
        *,
        retry_after: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
    ) -> Fault:
        """Answer the next `times` matching requests as an overloaded server does: 429 with a Status of
        reason TooManyRequests, `details.retryAfterSeconds` and the `Retry-After` header (seconds)."""
        return self.inject_fault(
            429,
            method=method,
            path_contains=path_contains,
            times=times,
            reason="TooManyRequests",
            message="Too many requests, please try again later.",
            headers={"Retry-After": str(retry_after)},
            details={"retryAfterSeconds": retry_after},
        )

    @property
    def requests(self) -> builtins.list[RequestRecord]:
        return self.request_log.records

    def requests_matching(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        path_contains: str | None = None,
        watch: bool | None = None,
        content_type: str | None = None,
    ) -> builtins.list[RequestRecord]:
        return self.request_log.matching(
            method, path, path_contains=path_contains, watch=watch, content_type=content_type
        )

    def clear_requests(self) -> None:
        self.request_log.records.clear()

    # -- simulated workloads -----------------------------------------------

    def enable_kubelet(
        self, *, ready_delay: float | None = 0.0, address_for: AddressHook | None = None, pods: bool = False
    ) -> FakeKubelet:
        """Start the fake kubelet and EndpointSlice controller (idempotent); `pods`: also keep a Pod object
        per replica (`pods.PodController`)."""
        if self.kubelet is None:
            self.kubelet = FakeKubelet(self.store, ready_delay=ready_delay, address_for=address_for)
            self._endpoints = EndpointsController(self.store, self.kubelet)
            self.kubelet.start()
            self._endpoints.start()
        if pods and self._pods is None:
            self._pods = PodController(self.store, self.kubelet)
            self._pods.start()
        return self.kubelet
