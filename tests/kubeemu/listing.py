"""LIST semantics: resourceVersion/resourceVersionMatch, selectors, limit/continue.

Continue tokens carry the list's resourceVersion, and later pages are served
from the store's exact snapshot at that version (rebuilt from the event
history), so pagination is consistent as with etcd; a token older than the
compacted history answers 410 Expired, as a real server does.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from . import errors
from .objects import labels_of, meta, present
from .registry import ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import Store

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


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"]).rstrip("\x00")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise errors.bad_request(f"invalid continue token: {token!r}") from None


def _key(obj: JsonObj) -> tuple[str, str]:
    m = meta(obj)
    return str(m.get("namespace", "")), str(m["name"])


def _after(obj: JsonObj, start: str) -> bool:
    namespace, _, name = start.partition("/")
    return _key(obj) > (namespace, name)


def _source(store: Store, rt: ResourceType, namespace: str | None, q: ListQuery) -> tuple[list[JsonObj], int, str]:
    """(objects, list resourceVersion, start key) before selection and paging; the stored objects themselves,
    which `list_item` copies."""
    gr = rt.group_resource
    current = store.resource_version
    if q.continue_token:
        if q.resource_version not in (None, "", "0"):
            raise errors.bad_request("specifying resource version is not allowed when using continue")
        rv, start = decode_continue(q.continue_token)
        try:
            return store.snapshot(gr, namespace, rv, copied=False), rv, start
        except errors.ApiError as exc:
            if exc.code == 410:
                raise errors.expired(_CONTINUE_TOO_OLD) from None
            raise
    if q.resource_version in (None, "", "0"):
        return store.items(gr, namespace, copied=False), current, ""
    rv = parse_rv(q.resource_version)
    if rv > current:
        raise errors.timeout(f"Too large resource version: {rv}, current: {current}")
    if q.resource_version_match == "Exact":
        return store.snapshot(gr, namespace, rv, copied=False), rv, ""
    if q.resource_version_match not in (None, "", "NotOlderThan"):
        raise errors.bad_request(f"resourceVersionMatch: Unsupported value: {q.resource_version_match!r}")
    return store.items(gr, namespace, copied=False), current, ""


def list_objects(store: Store, rt: ResourceType, namespace: str | None, q: ListQuery) -> JsonObj:
    selection = Selection(rt, q.label_selector, q.field_selector)
    objects, list_rv, start = _source(store, rt, namespace, q)
    chosen = [o for o in objects if selection.matches(o) and (not start or _after(o, start))]
    list_meta: JsonObj = {"resourceVersion": str(list_rv)}
    if q.limit and q.limit > 0 and len(chosen) > q.limit:
        remaining = len(chosen) - q.limit
        chosen = chosen[: q.limit]
        list_meta["continue"] = encode_continue(list_rv, "/".join(_key(chosen[-1])))
        if selection.empty:
            list_meta["remainingItemCount"] = remaining
    return {
        "kind": rt.list_kind,
        "apiVersion": rt.api_version,
        "metadata": list_meta,
        "items": [list_item(rt, o) for o in chosen],
    }


def list_item(rt: ResourceType, obj: JsonObj) -> JsonObj:
    """Typed (built-in) lists carry no apiVersion/kind on items; custom ones do."""
    item = present(rt, obj)
    if rt.builtin:
        item.pop("apiVersion")
        item.pop("kind")
    return item
