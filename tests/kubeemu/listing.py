"""LIST semantics: resourceVersion/resourceVersionMatch, selectors, limit/continue.

Continue tokens carry the list's resourceVersion, and later pages are served
from the store's exact snapshot at that version (rebuilt from the event
history), so pagination is consistent as with etcd; a token older than the
compacted history answers 410 Expired, as a real server does.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from dataclasses import dataclass
from typing import Any

from . import errors
from .objects import labels_of, present
from .registry import ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import ObjKey, Store

JsonObj = dict[str, Any]

_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue "
    "token in this response to retrieve the remainder of the results. Continuing with "
    "the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may "
    "show up in the list."
)


@dataclass(frozen=True)
class ListQuery:
    label_selector: str | None = None
    field_selector: str | None = None
    limit: int | None = None
    continue_token: str | None = None
    resource_version: str | None = None
    resource_version_match: str | None = None


class Selection:
    """Compiled label + field selectors for one resource type."""

    def __init__(self, rt: ResourceType, label: str | None, field: str | None) -> None:
        self.labels = LabelSelector.parse(label)
        allowed = {"metadata.name", "metadata.namespace", *rt.extra_fields}
        self.fields = FieldSelector.parse(field, allowed.__contains__)

    @property
    def empty(self) -> bool:
        return self.labels.empty and not self.fields.terms

    def matches(self, obj: JsonObj) -> bool:
        return self.labels.matches(labels_of(obj)) and self.fields.matches(obj)


def parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        raise errors.bad_request(f'Invalid value: "{value}": resourceVersion: invalid') from None
    if rv < 0:
        raise errors.bad_request(f'Invalid value: "{value}": resourceVersion: invalid')
    return rv


def encode_continue(rv: int, last: ObjKey) -> str:
    """A token for the page after `last`, at list version `rv` (the real server's token shape: the next
    key to read, which is the last key with a NUL appended)."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": "/".join(last) + "\x00"})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_continue(token: str) -> tuple[int, ObjKey]:
    """(list version, key the page starts after)."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        namespace, _, name = str(data["start"]).rstrip("\x00").partition("/")
        return int(data["rv"]), (namespace, name)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise errors.bad_request(f"invalid continue token: {token!r}") from None


def _source(
    store: Store, rt: ResourceType, namespace: str | None, q: ListQuery
) -> tuple[list[tuple[ObjKey, JsonObj]], int, ObjKey | None]:
    """(objects in key order, list resourceVersion, key to start after) before selection and paging.

    As the real server (etcd3 store + watch cache): no resourceVersion is the most recent state; "0" is
    any (served from the cache, here the current state); another version with `limit` and no
    resourceVersionMatch is exact (the legacy paged read at a version), without `limit` not older than.
    """
    gr = rt.group_resource
    current = store.resource_version
    if q.continue_token:
        if q.resource_version not in (None, "", "0"):
            raise errors.bad_request("specifying resource version is not allowed when using continue")
        rv, start = decode_continue(q.continue_token)
        try:
            return store.view(gr, namespace, rv), rv, start
        except errors.ApiError as exc:
            if exc.code == 410:
                raise errors.expired(_CONTINUE_TOO_OLD) from None
            raise
    if q.resource_version in (None, "", "0"):
        return store.view(gr, namespace), current, None
    rv = parse_rv(q.resource_version)
    if rv > current:
        raise errors.timeout(f"Too large resource version: {rv}, current: {current}")
    match = q.resource_version_match or ("Exact" if q.limit and q.limit > 0 else "NotOlderThan")
    if match == "Exact":
        return store.view(gr, namespace, rv), rv, None
    if match != "NotOlderThan":
        raise errors.bad_request(f"resourceVersionMatch: Unsupported value: {q.resource_version_match!r}")
    return store.view(gr, namespace), current, None


def list_objects(
    store: Store, rt: ResourceType, namespace: str | None, q: ListQuery, *, to_encode: bool = False
) -> JsonObj:
    """One list (page). Its items are copies, or with `to_encode` views of the stored objects for a caller
    that only encodes them (the HTTP handler): serving a 10,000-object list then copies nothing."""
    selection = Selection(rt, q.label_selector, q.field_selector)
    objects, list_rv, start = _source(store, rt, namespace, q)
    first = 0 if start is None else bisect.bisect_right(objects, start, key=lambda pair: pair[0])
    limit = q.limit if q.limit and q.limit > 0 else None
    remaining = 0
    if selection.empty:
        end = len(objects) if limit is None else min(len(objects), first + limit)
        chosen = objects[first:end]
        remaining = len(objects) - end
    else:
        chosen = []
        rest = iter(objects[first:])
        for pair in rest:
            if selection.matches(pair[1]):
                chosen.append(pair)
                if limit is not None and len(chosen) == limit:
                    break
        # Only whether one is left matters: remainingItemCount is not given for a selected list.
        remaining = int(any(selection.matches(pair[1]) for pair in rest))
    list_meta: JsonObj = {"resourceVersion": str(list_rv)}
    if limit is not None and len(chosen) == limit and remaining:
        # A continue token only when something is left (an etcd range read asks for limit + 1 keys).
        list_meta["continue"] = encode_continue(list_rv, chosen[-1][0])
        if selection.empty:
            list_meta["remainingItemCount"] = remaining
    item = _encoded_item if to_encode else list_item
    return {
        "kind": rt.list_kind,
        "apiVersion": rt.api_version,
        "metadata": list_meta,
        "items": [item(rt, obj) for _, obj in chosen],
    }


def _encoded_item(rt: ResourceType, obj: JsonObj) -> JsonObj:
    """`list_item` without the copy: the same keys in the same order, values shared with the store."""
    if rt.builtin:
        return {k: v for k, v in obj.items() if k != "apiVersion" and k != "kind"}
    return {
        "apiVersion": rt.api_version,
        "kind": rt.kind,
        **{k: v for k, v in obj.items() if k != "apiVersion" and k != "kind"},
    }


def list_item(rt: ResourceType, obj: JsonObj) -> JsonObj:
    """Typed (built-in) lists carry no apiVersion/kind on items; custom ones do."""
    item = present(rt, obj)
    if rt.builtin:
        item.pop("apiVersion")
        item.pop("kind")
    return item
