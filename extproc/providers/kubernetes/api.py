"""The API server, through the official client's asyncio flavour (`kubernetes.aio`).

One generic path for every resource kind: requests are built and authenticated by the client's
`ApiClient` (in-cluster service account or kubeconfig, TLS, tokens), bodies are plain dicts, and every
failure is a `KubeError` carrying the API server's `Status` (code, reason, message).

Like client-go, every request first takes a token from the client's rate limiter (`--kube-api-qps`,
`--kube-api-burst`), and an answer the server asks to retry later (429, or a 5xx with `Retry-After`) is
retried after that many seconds, up to `MAX_RETRIES` times. Bulk writers (the leader's sync) take their
tokens from a limiter of their own (`bulk()`), so the requests that must not wait behind thousands of
writes (lease renewals, scale-from-zero, watches) never queue behind them: controller-runtime gets the same
effect by giving leader election a client of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes.aio import client as k8s_client
from kubernetes.aio import config as k8s_config

from extproc.providers.kubernetes.ratelimit import TokenBucket

log = logging.getLogger(__name__)

JsonObj = dict[str, Any]
# A page of a list: its objects, and the list's resourceVersion on the last page ("" before).
Page = tuple[list[JsonObj], str]

MERGE_PATCH = "application/merge-patch+json"
# client-go's defaults: retry up to 10 times when told to; a Retry-After longer than a minute is taken as one.
MAX_RETRIES = 10
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource type: where it lives in the API and whether it is namespaced."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


HTTPSCALEDOBJECTS = Resource("http.keda.sh", "v1alpha1", "httpscaledobjects", "HTTPScaledObject")
INTERCEPTORROUTES = Resource("http.keda.sh", "v1beta1", "interceptorroutes", "InterceptorRoute")
SCALEDOBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
SERVICES = Resource("", "v1", "services", "Service")
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
ENVOYFILTERS = Resource("networking.istio.io", "v1alpha3", "envoyfilters", "EnvoyFilter")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet")
# Istio serves DestinationRules as v1 (1.22 and later), v1beta1 and v1alpha3: the first one served is read.
DESTINATIONRULES = tuple(
    Resource("networking.istio.io", version, "destinationrules", "DestinationRule") for version in ("v1", "v1beta1")
)


class KubeError(Exception):
    """A failed API call: the server's Status (code, reason, message), or code 0 when it was not reached."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message

    @classmethod
    def from_status(cls, code: int, body: bytes | str | Mapping[str, Any]) -> KubeError:
        status: Any = body
        if isinstance(body, bytes | str):
            try:
                status = json.loads(body)
            except ValueError:
                status = {"message": body.decode(errors="replace") if isinstance(body, bytes) else body}
        if not isinstance(status, Mapping):
            status = {}
        code = int(status.get("code") or code)
        error = Gone if code == 410 else cls
        return error(code, str(status.get("reason") or ""), str(status.get("message") or ""))


class Gone(KubeError):
    """410: the resourceVersion is too old (compacted); the caller must list again."""


class Unreachable(KubeError):
    """The API server could not be reached or the connection broke."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "Unreachable", message)


def retry_after(status: int, headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked to wait before retrying (429, or a 5xx with `Retry-After`), else None."""
    if status != 429 and status < 500:
        return None
    value = headers.get("Retry-After")
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), MAX_RETRY_AFTER)


async def connect(kubeconfig: Path | None = None, *, qps: float = 0.0, burst: int = 1) -> KubeApi:
    """A KubeApi from the in-cluster service account, else from `kubeconfig` ($KUBECONFIG, ~/.kube/config),
    limited to `qps` requests per second with bursts of `burst` (qps 0: no client-side limit)."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            log.info("using the in-cluster service account")
    else:
        await k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
    if configuration.proxy is None:
        configuration.proxy = env_proxy(configuration.host)
    # The client's session trusts the environment, which costs every request a thread hop to read the proxy
    # variables and ~/.netrc again (a tenth of zerohop's CPU during a sync of 10,000 writes); they are read
    # once, above, instead.
    configuration.client_session_kwargs = {"trust_env": False}
    return KubeApi(
        k8s_client.ApiClient(configuration), limiter=TokenBucket(qps, burst), bulk_limiter=TokenBucket(qps, burst)
    )


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`/`HTTP_PROXY`, unless `NO_PROXY` covers its
    host), as aiohttp's `trust_env` would find it on every request."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class KubeApi:
    """Generic reads, writes and watches of any resource, as dicts."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        limiter: TokenBucket | None = None,
        bulk_limiter: TokenBucket | None = None,
    ) -> None:
        self.api_client = api_client
        self.limiter = limiter or TokenBucket(0, 1)
        # Its own budget, as large as the other: bulk writes never delay a lease renewal or a wake.
        self.bulk_limiter = bulk_limiter or TokenBucket(self.limiter.qps, self.limiter.burst)
        # Answers the server asked to retry later (429 TooManyRequests, 5xx with Retry-After), retried.
        self.retried = 0

    def bulk(self) -> KubeApi:
        """This client paced by the bulk limiter, for writers that may queue many requests at once."""
        return KubeApi(self.api_client, limiter=self.bulk_limiter, bulk_limiter=self.bulk_limiter)

    async def close(self) -> None:
        await self.api_client.close()  # type: ignore[no-untyped-call]

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        params = await self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        await self.limiter.acquire()
        try:
            return await self.api_client.call_api(*params, _request_timeout=timeout or aiohttp.ClientTimeout(total=30))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"{method} {path}: {exc!r}") from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> JsonObj:
        for attempt in range(MAX_RETRIES + 1):
            response = await self._request(method, path, **kwargs)
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise Unreachable(f"{method} {path}: {exc!r}") from exc
            if 200 <= response.status < 300:
                break
            wait = retry_after(response.status, response.headers)
            if wait is None or attempt == MAX_RETRIES:
                raise KubeError.from_status(response.status, data)
            self.retried += 1
            log.debug("%s %s: %d, retrying after %gs", method, path, response.status, wait)
            await asyncio.sleep(wait)
        # orjson: a 500-object page decodes in half the time json takes (the first sync reads 60 of them).
        result: JsonObj = orjson.loads(data)
        return result

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObj], str]:
        """Every object (following `continue` pages) and the list's resourceVersion."""
        items: list[JsonObj] = []
        version = ""
        pages = self.pages(resource, namespace, label_selector=label_selector, field_selector=field_selector)
        async for page, page_version in pages:
            items.extend(page)
            version = page_version
        return items, version

    async def pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[Page]:
        """One list, a page of up to 500 objects at a time, each with the list's resourceVersion once the
        last page is in (empty before: a version to watch from exists only for the whole list).

        The next page is requested before this one is handed over, so the server serves it while the
        caller works through this one (at 10k objects a list is 20 pages)."""
        path = resource.path(namespace)

        def fetch(token: str) -> asyncio.Task[JsonObj]:
            query: list[tuple[str, Any]] = [("limit", 500)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            return asyncio.ensure_future(self._json("GET", path, query=query))

        pending = fetch("")
        try:
            while True:
                page = await pending
                metadata = page.get("metadata") or {}
                token = metadata.get("continue") or ""
                if token:
                    pending = fetch(token)
                yield page.get("items") or [], "" if token else str(metadata.get("resourceVersion") or "")
                if not token:
                    return
        finally:
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # a caller that stopped early never reads the prefetched page's failure

    async def watch(
        self,
        resource: Resource,
        namespace: str | None,
        resource_version: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[JsonObj]:
        """Watch events after `resource_version`, bookmarks included; ends when the server ends the stream.
        Raises Gone (410) when the version is too old, Unreachable when the connection breaks."""
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        timeout = aiohttp.ClientTimeout(total=timeout_seconds + 30, sock_connect=10)
        response = await self._request("GET", resource.path(namespace), query=query, timeout=timeout)
        raw: aiohttp.ClientResponse = response.response
        try:
            if raw.status != 200:
                raise KubeError.from_status(raw.status, await raw.read())
            async for line in raw.content:
                if not line.strip():
                    continue
                event: JsonObj = orjson.loads(line)
                if event.get("type") == "ERROR":
                    raise KubeError.from_status(500, event.get("object") or {})
                yield event
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"watch {resource.plural}: {exc!r}") from exc
        finally:
            raw.release()

    async def get(
        self, resource: Resource, namespace: str | None, name: str, subresource: str | None = None
    ) -> JsonObj | None:
        try:
            return await self._json("GET", resource.path(namespace, name, subresource))
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise

    async def served(self, resource: Resource) -> bool:
        """Whether the API server serves `resource` (its group/version's discovery document lists it): False
        for a custom resource whose CRD is not installed."""
        base = f"/apis/{resource.group}/{resource.version}" if resource.group else f"/api/{resource.version}"
        try:
            document = await self._json("GET", base)
        except KubeError as exc:
            if exc.code == 404:
                return False
            raise
        return any(item.get("name") == resource.plural for item in document.get("resources") or [])

    async def create(self, resource: Resource, namespace: str | None, body: JsonObj) -> JsonObj:
        return await self._json("POST", resource.path(namespace), body=body)

    async def replace(
        self, resource: Resource, namespace: str | None, name: str, body: JsonObj, *, subresource: str | None = None
    ) -> JsonObj:
        """PUT `body` in place of the object (or its `subresource`); a set `metadata.resourceVersion` is a
        precondition the server enforces with 409 Conflict."""
        return await self._json("PUT", resource.path(namespace, name, subresource), body=body)

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
    ) -> JsonObj:
        return await self._json(
            "PATCH", resource.path(namespace, name, subresource), body=body, content_type=content_type
        )


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
