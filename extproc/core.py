"""The core wired together, and the small interface through which providers reach it.

`Core` owns the target registry, the route table, the cold gate and the activation bus. Providers
(Kubernetes, local processes) implement `Provider`: they feed targets and readiness in through
`Core.apply_targets` / `Core.set_routable`, and are told to wake a target through `Provider.wake`.
The core imports no provider, no gRPC and no Kubernetes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from extproc.activation import ActivationBus
from extproc.coldstart import ColdGate
from extproc.httpso import ScaledTarget, TargetKey
from extproc.routing import Router, RouteTable
from extproc.targets import InFlightMode, TargetRegistry


@dataclass(frozen=True, slots=True)
class ReplicaCounts:
    """What a provider knows of a target's replicas: wanted and ready to serve."""

    desired: int
    ready: int


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

    def status(self) -> dict[str, Any]:
        """Provider-specific state for the status document."""


class Core:
    """Targets, routes, counters, the cold gate and activation fan-out of one zerohop process."""

    def __init__(
        self,
        *,
        hold_timeout: float,
        max_held_per_target: int,
        max_held_total: int,
        rewake_interval: float = 2.0,
        in_flight: InFlightMode = InFlightMode.CONCURRENCY,
        release_watch: float = 10.0,
    ) -> None:
        self.gate = ColdGate(
            max_held_per_target=max_held_per_target,
            max_held_total=max_held_total,
            rewake_interval=rewake_interval,
            watch_seconds=release_watch,
        )
        self.bus = ActivationBus()
        self.registry = TargetRegistry(self.gate, hold_timeout=hold_timeout, in_flight=in_flight)
        self.router = Router()
        self.gate.add_wake_hook(self.bus.publish)
        self.gate.add_watch_hook(self._watching)

    def _watching(self, key: TargetKey, _on: bool) -> None:
        state = self.registry.get(key)
        if state is not None:
            state.set_follow()

    def apply_targets(self, targets: Iterable[ScaledTarget], clusters: Mapping[str, TargetKey]) -> None:
        """Replace the set of targets; `clusters` maps gateway cluster names to the target they serve."""
        states = self.registry.sync(targets)
        self.router.publish(RouteTable(states.values(), clusters))

    def set_routable(self, key: TargetKey, routable: bool, *, guessed: bool = False) -> None:
        """Whether the gateway can route to `key` now; `guessed` when the provider could not see the gateway
        itself (a delay passed), so released and warm requests are watched for the gateway's own 503."""
        self.gate.set_routable(key, routable, guessed=guessed)

    def add_provider(self, provider: Provider) -> None:
        self.gate.add_wake_hook(provider.wake)
        self.gate.add_reconfirm_hook(provider.reconfirm)
