"""Small helpers over JSON objects: metadata access, dotted paths, timestamps, ids."""

from __future__ import annotations

import copy
import datetime
import hashlib
import random
import uuid
from typing import Any

from .registry import ResourceType

JsonObj = dict[str, Any]

# The alphabet apiserver uses for generateName suffixes (no vowels, no confusables).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def meta(obj: JsonObj) -> JsonObj:
    """`obj.metadata`, created if missing."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def name_of(obj: JsonObj) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: JsonObj) -> str:
    return str(meta(obj).get("namespace") or "")


def rv_of(obj: JsonObj) -> int:
    return int(meta(obj).get("resourceVersion") or 0)


def labels_of(obj: JsonObj) -> dict[str, str]:
    labels = meta(obj).get("labels")
    return dict(labels) if isinstance(labels, dict) else {}


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def name_suffix(length: int = 5) -> str:
    return "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(length))


def stable_suffix(text: str, length: int) -> str:
    """A deterministic stand-in for the random suffixes controllers add to names."""
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:length])


def get_path(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def set_path(obj: JsonObj, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = obj
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value


def present(rt: ResourceType, obj: JsonObj) -> JsonObj:
    """A copy of a stored object as served at `rt`'s version."""
    out: JsonObj = {"apiVersion": rt.api_version, "kind": rt.kind}
    out.update(copy.deepcopy({k: v for k, v in obj.items() if k not in out}))
    return out
