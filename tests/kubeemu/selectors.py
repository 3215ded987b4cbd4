"""Label and field selectors: parsing the query-string syntax and matching objects."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request

JsonObj = dict[str, Any]

_TOKEN = re.compile(r"\s*(==|!=|=|!|,|\(|\)|<|>|[^\s!=,()<>]+)")
_OPS = {"=", "==", "!=", "<", ">"}


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "<", ">"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case "exists":
                return present
            case "!":
                return not present
            case "<" | ">":
                if value is None:
                    return False
                try:
                    have, want = int(value), int(self.values[0])
                except ValueError:
                    return False
                return have < want if self.op == "<" else have > want
        return False


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise bad_request(f"unable to parse requirement: invalid selector {text!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def fail(self, why: str) -> ApiError:
        return bad_request(f"unable to parse requirement: {why} in selector {self.text!r}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end")
        self.pos += 1
        return tok

    def ident(self) -> str:
        tok = self.take()
        if tok in _OPS or tok in {",", "(", ")", "!"}:
            raise self.fail(f"expected identifier, found {tok!r}")
        return tok

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        if self.peek() is None:
            return reqs
        while True:
            reqs.append(self.requirement())
            tok = self.peek()
            if tok is None:
                return reqs
            if tok != ",":
                raise self.fail(f"found {tok!r}, expected ','")
            self.take()

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            return Requirement(self.ident(), "!")
        key = self.ident()
        tok = self.peek()
        if tok is None or tok == ",":
            return Requirement(key, "exists")
        op = self.take()
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set())
        if op not in _OPS:
            raise self.fail(f"unknown operator {op!r}")
        value = ""
        nxt = self.peek()
        if nxt is not None and nxt != ",":
            value = self.ident()
        if op in ("<", ">") and not value.lstrip("-").isdigit():
            raise self.fail(f"for 'Gt', 'Lt' operators, the value must be an integer: {value!r}")
        return Requirement(key, "=" if op == "==" else op, (value,))

    def value_set(self) -> tuple[str, ...]:
        if self.take() != "(":
            raise self.fail("expected '('")
        values: list[str] = []
        while True:
            tok = self.take()
            if tok == ")":
                break
            if tok == ",":
                continue
            values.append(tok)
        if not values:
            raise self.fail("for 'in', 'notin' operators, values set can't be empty")
        return tuple(values)


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        return cls(tuple(_Parser(text or "").parse()))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    @classmethod
    def parse(cls, text: str | None, allowed: Callable[[str], bool]) -> FieldSelector:
        terms: list[tuple[str, bool, str]] = []
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", part)
            if m is None:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
            name, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
            if not allowed(name):
                raise bad_request(f"field label not supported: {name}")
            terms.append((name, op != "!=", value))
        return cls(tuple(terms))

    def matches(self, obj: JsonObj) -> bool:
        return all((field_value(obj, f) == v) == eq for f, eq, v in self.terms)


def field_value(obj: JsonObj, dotted: str) -> str:
    """A field's value rendered as a field selector compares it ("" if absent)."""
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def selector_to_string(selector: JsonObj | None) -> str:
    """Render a metav1.LabelSelector (matchLabels/matchExpressions) as a query string."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def map_selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A plain map selector (as on a Service) selects labels; empty selects nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())
