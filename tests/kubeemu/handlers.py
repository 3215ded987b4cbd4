"""HTTP glue: turn an aiohttp request into an ApiServer / WatchHub call and a response."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import discovery, errors
from .apiserver import ApiServer, DeleteOptions
from .listing import ListQuery, Selection
from .paths import DocTarget, ResourceTarget, resolve
from .watch import WatchHub, WatchParams

JsonObj = dict[str, Any]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f"invalid value for {name}: {value!r}") from None


async def _json_body(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw:
        if optional:
            return None
        raise errors.bad_request("the request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise errors.bad_request(f"the body of the request could not be decoded: {exc}") from None


class Handlers:
    def __init__(self, api: ApiServer, hub: WatchHub) -> None:
        self.api = api
        self.hub = hub

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = resolve(self.api.registry, request.path)
        if isinstance(target, DocTarget):
            if request.method != "GET":
                raise errors.method_not_allowed(request.method)
            return self._document(request, target)
        if target.name is None:
            return await self._collection(request, target)
        return await self._item(request, target)

    def _document(self, request: web.Request, target: DocTarget) -> web.StreamResponse:
        registry = self.api.registry
        match target.kind:
            case "health":
                return web.Response(text="ok")
            case "version":
                return json_response(discovery.VERSION_INFO)
            case "api":
                return json_response(discovery.api_versions(request.host))
            case "apis":
                return json_response(discovery.group_list(registry))
            case "group":
                return json_response(discovery.group(registry, target.group))
            case _:
                return json_response(discovery.resource_list(registry, target.group, target.version))

    @staticmethod
    def _list_query(request: web.Request) -> ListQuery:
        q = request.query
        return ListQuery(
            label_selector=q.get("labelSelector"),
            field_selector=q.get("fieldSelector"),
            limit=_int(q.get("limit"), "limit"),
            continue_token=q.get("continue") or None,
            resource_version=q.get("resourceVersion"),
            resource_version_match=q.get("resourceVersionMatch") or None,
        )

    async def _delete_options(self, request: web.Request) -> DeleteOptions:
        q = request.query
        return DeleteOptions.from_body(
            await _json_body(request, optional=True),
            propagation_policy=q.get("propagationPolicy"),
            dry_run=bool(q.get("dryRun")),
        )

    async def _collection(self, request: web.Request, target: ResourceTarget) -> web.StreamResponse:
        rt, namespace, q = target.rt, target.namespace, request.query
        if request.method == "GET":
            if _truthy(q.get("watch")):
                params = WatchParams(
                    resource_version=q.get("resourceVersion"),
                    allow_bookmarks=_truthy(q.get("allowWatchBookmarks")),
                    timeout_seconds=_int(q.get("timeoutSeconds"), "timeoutSeconds"),
                    send_initial_events=_truthy(q.get("sendInitialEvents")),
                )
                selection = Selection(rt, q.get("labelSelector"), q.get("fieldSelector"))
                return await self.hub.serve(request, rt, namespace, selection, params)
            return json_response(self.api.list(rt, namespace, self._list_query(request), to_encode=True))
        if request.method == "POST" and namespace is not None:
            created = self.api.create(rt, namespace, await _json_body(request), dry_run=bool(q.get("dryRun")))
            return json_response(created, status=201)
        if request.method == "DELETE" and "deletecollection" in rt.verbs:
            return json_response(
                self.api.delete_collection(
                    rt, namespace, self._list_query(request), await self._delete_options(request)
                )
            )
        raise errors.method_not_allowed(request.method)

    async def _item(self, request: web.Request, target: ResourceTarget) -> web.StreamResponse:
        rt, name, sub = target.rt, target.name, target.subresource
        assert name is not None
        namespace = target.namespace or ""
        dry_run = bool(request.query.get("dryRun"))
        method = request.method
        if method == "GET":
            return json_response(self.api.get(rt, namespace, name, sub))
        if method == "PUT":
            return json_response(
                self.api.replace(rt, namespace, name, await _json_body(request), subresource=sub, dry_run=dry_run)
            )
        if method == "PATCH":
            return json_response(
                self.api.patch(
                    rt,
                    namespace,
                    name,
                    request.headers.get("Content-Type", ""),
                    await request.read(),
                    subresource=sub,
                    dry_run=dry_run,
                )
            )
        if method == "DELETE" and sub is None:
            return json_response(self.api.delete(rt, namespace, name, await self._delete_options(request)))
        raise errors.method_not_allowed(method)
