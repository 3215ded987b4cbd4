"""The small interface through which the core reaches a provider (Kubernetes, local processes).

Providers feed targets and readiness in through `Core.apply_targets` / `Core.set_routable` and are told to
wake a target through `Provider.wake`; the core never imports a provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from extproc.core.httpso import TargetKey

if TYPE_CHECKING:
    from extproc.core.engine import Core


@dataclass(frozen=True, slots=True)
class ReplicaCounts:
    """What a provider knows of a target's replicas: wanted and ready to serve."""

    desired: int
    ready: int


class ProviderStatus(Protocol):
    """A provider's state at one moment, typed for whoever reads it (metrics) and rendered for /status."""

    def as_dict(self) -> dict[str, Any]:
        """The provider's part of the status document (JSON)."""


class Provider(Protocol):
    """Where targets come from and how they are woken."""

    async def start(self, core: Core) -> None:
        """Begin feeding `core` with targets and readiness; return once the initial state is applied."""

    async def stop(self) -> None: ...

    def wake(self, key: TargetKey) -> None:
        """A cold request arrived for `key`: start bringing it up. Must not block."""

    def reconfirm(self, key: TargetKey) -> None:
        """A release for `key` proved wrong (the gateway could not route it): the core made it unroutable;
        confirm again that the gateway can route it, then `Core.set_routable(key, True)`. Must not block."""

    def replicas(self, key: TargetKey) -> ReplicaCounts | None:
        """Replica counts for status views, or None when unknown."""

    def ready(self) -> bool:
        """True once the provider has its initial state (readiness of the whole server)."""

    def status(self) -> ProviderStatus:
        """Provider-specific state for the status document and the metrics."""
