"""What clients sent (for assertions) and scripted failures to answer them with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class RequestRecord:
    """One request as the emulator saw it. `status` is filled in once answered."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any = None
    status: int | None = None

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "").lower() in ("true", "1")


@dataclass
class Fault:
    """Answer the next `times` matching requests with `status` instead of serving them."""

    status: int
    method: str | None = None
    path_contains: str | None = None
    times: int = 1
    reason: str = "InternalError"
    message: str = "injected failure"
    headers: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (
            self.times > 0
            and (self.method is None or self.method.upper() == method)
            and (self.path_contains is None or self.path_contains in path)
        )


class RequestLog:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.faults: list[Fault] = []

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                return fault
        return None

    def matching(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        path_contains: str | None = None,
        watch: bool | None = None,
        content_type: str | None = None,
    ) -> list[RequestRecord]:
        return [
            r
            for r in self.records
            if (method is None or r.method == method.upper())
            and (path is None or r.path == path)
            and (path_contains is None or path_contains in r.path)
            and (watch is None or r.is_watch == watch)
            and (content_type is None or (r.content_type or "").startswith(content_type))
        ]


# Where the middleware leaves a request's record for handlers (watches set status early).
RECORD_KEY = web.RequestKey("kubeemu.record", RequestRecord)
