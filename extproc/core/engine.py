"""The core wired together: `Core` owns the target registry, the route table, the cold gate and the
activation bus of one zerohop process. Providers reach it through `extproc.core.provider.Provider`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from extproc.core.activation import ActivationBus
from extproc.core.coldstart import ColdGate
from extproc.core.httpso import ScaledTarget, TargetKey
from extproc.core.provider import Provider
from extproc.core.registry import InFlightMode, TargetRegistry
from extproc.core.routing import Router, RouteTable

log = logging.getLogger(__name__)


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
        self.cold_gate = ColdGate(
            max_held_per_target=max_held_per_target,
            max_held_total=max_held_total,
            rewake_interval=rewake_interval,
            watch_seconds=release_watch,
        )
        self.bus = ActivationBus()
        self.registry = TargetRegistry(self.cold_gate, hold_timeout=hold_timeout, in_flight=in_flight)
        self.router = Router()
        self.cold_gate.add_wake_hook(self.bus.publish)
        self.cold_gate.add_watch_hook(self._watching)
        self._noticed: dict[TargetKey, tuple[str, ...]] = {}
        self._routable_hooks: list[Callable[[TargetKey, bool], None]] = []

    def _watching(self, key: TargetKey, _on: bool) -> None:
        state = self.registry.get(key)
        if state is not None:
            state.set_follow()

    def apply_targets(self, targets: Iterable[ScaledTarget], clusters: Mapping[str, TargetKey]) -> None:
        """Replace the set of targets; `clusters` maps gateway cluster names to the target they serve."""
        targets = list(targets)
        states = self.registry.sync(targets)
        self.router.publish(RouteTable(states.values(), clusters))
        wanted = {target.key for target in targets}
        for key in [key for key in self._noticed if key not in wanted]:
            del self._noticed[key]
        for target in targets:
            self._notice(target)

    def update_targets(
        self,
        changed: Iterable[ScaledTarget] = (),
        removed: Iterable[TargetKey] = (),
        clusters: Mapping[str, TargetKey | None] | None = None,
    ) -> None:
        """Add or change `changed`, drop `removed` and set the `clusters` mappings that changed (None:
        unmapped); the route table is derived from the current one, so the cost is that of the change, and
        a change that routes no differently (labels, metric, replicas) publishes no new table."""
        states = []
        changed = [target for target in changed if not self._unchanged(target)]
        for target in changed:
            before = self.registry.get(target.key)
            routed = before is not None and _routing(before.spec) == _routing(target)
            state = self.registry.upsert(target)
            if not routed:
                states.append(state)
        removed = [key for key in removed if self.registry.remove(key)]
        for key in removed:
            self._noticed.pop(key, None)
        for target in changed:
            self._notice(target)
        if states or removed or clusters:
            self.router.publish(self.router.table.updated(states, removed, clusters))

    def _unchanged(self, target: ScaledTarget) -> bool:
        """The very target already held: derived again from the same document (its Service or endpoints
        changed), nothing here to update and nothing new to say."""
        state = self.registry.get(target.key)
        return state is not None and state.spec is target

    def _notice(self, target: ScaledTarget) -> None:
        # Once per object and notice, whichever provider the target came from; a notice that goes away and
        # comes back (the field removed, then added again) is said again.
        current = target.notices()
        said = self._noticed.get(target.key, ())
        for line in current:
            if line not in said:
                log.warning("%s", line)
        if current:
            self._noticed[target.key] = tuple(current)
        else:
            self._noticed.pop(target.key, None)

    def set_routable(self, key: TargetKey, routable: bool, *, guessed: bool = False) -> None:
        """Whether the gateway can route to `key` now; `guessed` when the provider could not see the gateway
        itself (a delay passed), so released and warm requests are watched for the gateway's own 503."""
        self.cold_gate.set_routable(key, routable, guessed=guessed)
        for hook in self._routable_hooks:
            hook(key, routable)

    def add_routable_hook(self, hook: Callable[[TargetKey, bool], None]) -> None:
        """Call `hook(key, routable)` whenever a provider reports routability (the warm path's switch)."""
        self._routable_hooks.append(hook)

    def add_provider(self, provider: Provider) -> None:
        self.cold_gate.add_wake_hook(provider.wake)
        self.cold_gate.add_reconfirm_hook(provider.reconfirm)


def _routing(target: ScaledTarget) -> tuple[object, ...]:
    """The parts of a target the route table reads."""
    return target.routing_rules
