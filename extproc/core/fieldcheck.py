"""Unknown fields in a document, checked against a declared tree of the known ones, with the nearest valid name.

A tree maps each known field name to what it holds: `LEAF` (any value, not looked into), another tree (an
object whose fields are checked in turn), or `[tree]` (a list of such objects). So a typo such as `host:` for
`hosts:` is reported as `spec.host: unknown field; did you mean hosts?` instead of silently meaning nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

LEAF = None
Node = Union["Tree", list["Tree"], None]
Tree = Mapping[str, Node]


@dataclass(frozen=True, slots=True)
class UnknownField:
    """A field the tree does not know: where it is, and the known name it most resembles (if any)."""

    path: str
    suggestion: str | None = None

    def __str__(self) -> str:
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"{self.path}: unknown field{hint}"


def unknown_fields(document: Any, tree: Tree, path: str = "") -> list[UnknownField]:
    """Every field of `document` (nested) that `tree` does not declare, in document order."""
    found: list[UnknownField] = []
    _walk(document, tree, path, found)
    return found


def nearest(name: str, known: list[str]) -> str | None:
    """The known name closest to `name` (case-insensitive), or None when none is close."""
    by_lower = {k.lower(): k for k in known}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def _walk(value: Any, tree: Tree, path: str, found: list[UnknownField]) -> None:
    if type(value) is not dict and not isinstance(value, Mapping):
        return  # a wrong type is the parser's to report, with its own message
    # Every document of a 10,000-target sync passes here: a leaf costs a lookup, no path is built for it.
    for name, child in value.items():
        if name not in tree:
            where = f"{path}.{name}" if path else str(name)
            found.append(UnknownField(where, nearest(str(name), list(tree))))
            continue
        node = tree[name]
        if node is None:
            continue
        where = f"{path}.{name}" if path else str(name)
        if isinstance(node, list):
            if isinstance(child, list):
                for index, item in enumerate(child):
                    _walk(item, node[0], f"{where}[{index}]", found)
        elif node is not None:
            _walk(child, node, where, found)
