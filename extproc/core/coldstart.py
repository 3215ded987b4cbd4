"""The cold gate: whether each target can be routed to, and the requests held until it can.

A request for a target that is not routable is *held*: the gate wakes the target (through hooks the
providers and the scaler register), parks the request on a future and resolves it when a provider reports
the target routable, when its hold budget runs out, or when the server drains. Caps bound how many requests
are held per target and in total. Nothing here knows about gRPC, Envoy or Kubernetes.

Who listens to a wake (`ColdGate.wake` calls every `add_wake_hook` hook, at most once per rewake interval):
`Core` (core/engine.py) registers the activation bus, whose subscribers are the KEDA push (each
StreamIsActive stream, keda/scaler.py) and the peer relay to the other zerohop replicas (keda/peers.py);
`Core.add_provider` registers `Provider.wake`, the Kubernetes scale patch 0 -> max(1, replicas.min) (the local
provider leaves scaling to its autoscaler, which hears the KEDA push); and `ZerohopServer` (app/server.py)
registers tracing's `zerohop.activate` span when OpenTelemetry is on.

A release can be wrong when the provider could only guess that the gateway routes (no stats, a fixed
delay): the servicer reports what became of each released request (`released`); the gateway's own "no
healthy upstream" makes the target unroutable again and asks the provider to confirm once more
(`add_reconfirm_hook`). For `watch_seconds` after a guessed release, warm requests are followed and
reported the same way (`TargetGate.watching`). Once a guess has proved wrong, the next guessed release
lets a single held request go first and releases the rest only when that one came back routed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable

from extproc.core.httpso import TargetKey

log = logging.getLogger(__name__)

WakeHook = Callable[[TargetKey], None]
ReconfirmHook = Callable[[TargetKey], None]


class HoldOutcome(enum.StrEnum):
    """How a cold request ended: the one vocabulary of the servicer, traffic counters, metrics and spans.

    The gate resolves a hold with RELEASED, TIMEOUT, SHUTDOWN or REMOVED; the servicer adds OVER_CAPACITY and
    SHUTDOWN for a request refused without being held, ABORTED when the client went away while held, FAILOVER
    for a request whose hold timed out and whose answer came from the target's fallback Service (TIMEOUT when
    the fallback could not answer either), and PLACEHOLDER for a browser answered the placeholder page at once
    instead of being held. The values are metric label values and span attributes: changing one changes what
    operators query.
    """

    RELEASED = "released"
    TIMEOUT = "timeout"
    OVER_CAPACITY = "over_capacity"
    SHUTDOWN = "shutdown"
    REMOVED = "removed"
    ABORTED = "aborted"
    FAILOVER = "failover"
    PLACEHOLDER = "placeholder"


class TargetGate:
    """Routability and the waiting room of one target."""

    __slots__ = (
        "_waiters",
        "cold_since",
        "cold_starts",
        "failed_guesses",
        "held",
        "key",
        "last_cold_duration",
        "last_cold_start",
        "last_wake",
        "probing",
        "release_failures",
        "rewake_handle",
        "routable",
        "wakes",
        "watch_handle",
        "watching",
    )

    def __init__(self, key: TargetKey) -> None:
        self.key = key
        self.routable = False
        self.held = 0
        self.wakes = 0
        self.last_wake = -1e18
        # A cold start: from the first request held while not routable until the target is routable.
        self.cold_starts = 0
        self.cold_since: float | None = None
        self.last_cold_start: float | None = None  # wall-clock time it began
        self.last_cold_duration: float | None = None
        # Released requests that came back as the gateway's own "no healthy upstream" (a wrong release).
        self.release_failures = 0
        # Guessed releases that proved wrong since the target was last confirmed routable or went cold.
        self.failed_guesses = 0
        self.watching = False  # released recently: followed requests are checked for a wrong release
        self.watch_handle: asyncio.TimerHandle | None = None
        self.probing = False  # one held request was let go to learn whether the gateway routes
        # While requests are held for an unroutable target: the next re-wake, so a missed push is repeated.
        self.rewake_handle: asyncio.TimerHandle | None = None
        self._waiters: set[Hold] = set()


class Hold:
    """One held request: created by `ColdGate.try_hold`, awaited with `wait`, always ended with `close`."""

    __slots__ = ("_closed", "_future", "_gate", "_owner", "_timer", "probe", "started")

    def __init__(self, owner: ColdGate, gate: TargetGate, future: asyncio.Future[HoldOutcome]) -> None:
        self._owner = owner
        self._gate = gate
        self._future = future
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.probe = False  # let go alone, after a wrong guess, to learn whether the gateway routes
        self.started = time.monotonic()

    async def wait(self, timeout: float) -> HoldOutcome:
        """Wait until released, timed out, shut down or removed; cancellation propagates (client gone)."""
        future = self._future
        if not future.done():
            self._timer = future.get_loop().call_later(timeout, _resolve, future, HoldOutcome.TIMEOUT)
        return await future

    def resolve(self, outcome: HoldOutcome) -> None:
        _resolve(self._future, outcome)

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        """Leave the waiting room; idempotent, and safe whether or not `wait` completed."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if not self._future.done():
            self._future.cancel()
        self._gate._waiters.discard(self)
        self._gate.held -= 1
        self._owner.held_total -= 1
        if not self._gate.held:
            _cancel_rewake(self._gate)


def _cancel_rewake(gate: TargetGate) -> None:
    if gate.rewake_handle is not None:
        gate.rewake_handle.cancel()
        gate.rewake_handle = None


def _resolve(future: asyncio.Future[HoldOutcome], outcome: HoldOutcome) -> None:
    if not future.done():
        future.set_result(outcome)


class ColdGate:
    """All target gates, the global cap, wake hooks and drain."""

    def __init__(
        self,
        *,
        max_held_per_target: int,
        max_held_total: int,
        rewake_interval: float = 2.0,
        watch_seconds: float = 10.0,
    ) -> None:
        self.max_held_per_target = max_held_per_target
        self.max_held_total = max_held_total
        self.rewake_interval = rewake_interval
        self.watch_seconds = watch_seconds
        self.held_total = 0
        self.draining = False
        self.release_failures = 0
        self._gates: dict[TargetKey, TargetGate] = {}
        self._wake_hooks: list[WakeHook] = []
        self._reconfirm_hooks: list[ReconfirmHook] = []
        self._watch_hooks: list[Callable[[TargetKey, bool], None]] = []

    def add_wake_hook(self, hook: WakeHook) -> None:
        """Call `hook(key)` when a target must wake: at its first cold request, then every rewake_interval
        while requests stay held for it (a timer, so a missed push is repeated without new arrivals)."""
        self._wake_hooks.append(hook)

    def add_reconfirm_hook(self, hook: ReconfirmHook) -> None:
        """Call `hook(key)` when a release proved wrong (or a probe was lost): confirm routability again."""
        self._reconfirm_hooks.append(hook)

    def add_watch_hook(self, hook: Callable[[TargetKey, bool], None]) -> None:
        """Call `hook(key, watching)` when the watch window after a release opens and closes."""
        self._watch_hooks.append(hook)

    def for_target(self, key: TargetKey) -> TargetGate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = TargetGate(key)
        return gate

    def forget(self, key: TargetKey) -> None:
        """The target is gone: its held requests end with REMOVED."""
        gate = self._gates.pop(key, None)
        if gate is not None:
            if gate.watch_handle is not None:
                gate.watch_handle.cancel()
            _cancel_rewake(gate)
            for hold in list(gate._waiters):
                hold.resolve(HoldOutcome.REMOVED)

    def set_routable(self, key: TargetKey, routable: bool, *, guessed: bool = False) -> None:
        """A provider reports whether the gateway can now route to `key`; True releases every held request.
        `guessed`: the provider could not see the gateway (a delay passed): the release is watched, and after
        a wrong guess only one held request goes first (the rest follow once it came back routed)."""
        gate = self.for_target(key)
        if gate.routable == routable:
            return
        if not routable:
            gate.routable = gate.probing = False
            gate.failed_guesses = 0  # the endpoints are gone: the next start is a new episode
            log.info("target %s is not routable", key)
            self._watch(gate, False)
            return
        if not guessed:
            gate.failed_guesses = 0
        elif gate.failed_guesses and (gate.probing or self._release_one(gate)):
            return  # a probe is out (or just sent): its verdict decides
        gate.routable = True
        gate.probing = False
        self._watch(gate, guessed)
        waiting = len(gate._waiters)
        if gate.cold_since is not None:
            gate.last_cold_duration = time.monotonic() - gate.cold_since
            gate.cold_since = None
            log.info(
                "target %s is routable: cold start took %.0f ms, releasing %d held request(s)",
                key,
                gate.last_cold_duration * 1000,
                waiting,
            )
        else:
            log.info("target %s is routable", key)
        for hold in list(gate._waiters):
            hold.resolve(HoldOutcome.RELEASED)

    def _release_one(self, gate: TargetGate) -> bool:
        """Let one held request go as a probe (the target stays unroutable); False when none is held."""
        for hold in gate._waiters:
            if not hold._future.done():
                gate.probing = True
                hold.probe = True
                hold.resolve(HoldOutcome.RELEASED)
                log.info("target %s: releasing one held request to check that the gateway routes it", gate.key)
                return True
        return False

    def released(self, gate: TargetGate, probe: bool, routed: bool | None) -> None:
        """What became of a request zerohop let through (released, or followed while the target is watched):
        `routed` True when the gateway sent it upstream, False when it answered "no healthy upstream"
        itself, None when unknown (the stream ended first)."""
        if routed is False:
            self._release_failed(gate)
        elif probe and gate.probing:
            gate.probing = False
            if routed:
                gate.failed_guesses = 0
                self.set_routable(gate.key, True, guessed=True)
            else:
                self._reconfirm(gate.key)

    def _release_failed(self, gate: TargetGate) -> None:
        gate.release_failures += 1
        self.release_failures += 1
        if not gate.routable and not gate.probing:
            return  # already reconfirming: another request of the same wrong release
        log.warning(
            "target %s: a released request got the gateway's own 503 (no healthy upstream): the gateway does "
            "not have the endpoint yet; holding new requests until it is confirmed again",
            gate.key,
        )
        gate.failed_guesses += 1
        if gate.routable:
            gate.routable = False
            if gate.cold_since is None:
                gate.cold_since = time.monotonic()
        gate.probing = False
        self._watch(gate, False)
        self._reconfirm(gate.key)

    def _reconfirm(self, key: TargetKey) -> None:
        for hook in self._reconfirm_hooks:
            try:
                hook(key)
            except Exception:
                log.exception("reconfirm hook %r failed for %s", hook, key)

    def _watch(self, gate: TargetGate, on: bool) -> None:
        if gate.watch_handle is not None:
            gate.watch_handle.cancel()
            gate.watch_handle = None
        if on and self.watch_seconds > 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                on = False  # no event loop (a synchronous caller): nothing could end the window
            else:
                gate.watch_handle = loop.call_later(self.watch_seconds, self._watch, gate, False)
        if gate.watching == on:
            return
        gate.watching = on
        for hook in self._watch_hooks:
            hook(gate.key, on)

    def wake_cold(self, gate: TargetGate) -> None:
        """A cold request answered without being held (a placeholder page): the cold start begins (if it has
        not yet) and the target wakes, as for a held one."""
        if gate.cold_since is None and not gate.routable:
            gate.cold_since = time.monotonic()
            gate.last_cold_start = time.time()
            gate.cold_starts += 1
            log.info("cold start of %s: holding requests until it is routable", gate.key)
        self.wake(gate)

    def try_hold(self, gate: TargetGate) -> Hold | None:
        """Admit a cold request to the waiting room, or None when a cap is reached. Wakes the target either way."""
        self.wake_cold(gate)
        if self.draining:
            return None
        if gate.held >= self.max_held_per_target or self.held_total >= self.max_held_total:
            return None
        future: asyncio.Future[HoldOutcome] = asyncio.get_running_loop().create_future()
        hold = Hold(self, gate, future)
        gate._waiters.add(hold)
        gate.held += 1
        self.held_total += 1
        if gate.routable:
            hold.resolve(HoldOutcome.RELEASED)
        elif gate.rewake_handle is None:
            self._schedule_rewake(gate)
        return hold

    def _schedule_rewake(self, gate: TargetGate) -> None:
        if self.rewake_interval > 0:
            delay = max(0.0, gate.last_wake + self.rewake_interval - time.monotonic())
            gate.rewake_handle = asyncio.get_running_loop().call_later(delay, self._rewake, gate)

    def _rewake(self, gate: TargetGate) -> None:
        """The re-wake timer: wake again while anything is held for a target that is still not routable,
        whether or not new requests arrive (they alone would leave a missed push unrepeated)."""
        gate.rewake_handle = None
        if not gate.held or gate.routable or self.draining or self._gates.get(gate.key) is not gate:
            return
        if time.monotonic() - gate.last_wake >= self.rewake_interval * 0.99:  # timers may fire a hair early
            self._wake_now(gate)
        self._schedule_rewake(gate)

    def wake(self, gate: TargetGate) -> None:
        if time.monotonic() - gate.last_wake >= self.rewake_interval:
            self._wake_now(gate)

    def _wake_now(self, gate: TargetGate) -> None:
        gate.last_wake = time.monotonic()
        gate.wakes += 1
        for hook in self._wake_hooks:
            try:
                hook(gate.key)
            except Exception:
                log.exception("wake hook %r failed for %s", hook, gate.key)

    def drain(self) -> int:
        """Server shutdown: end every hold now (RELEASED where routable, else SHUTDOWN); refuse new ones."""
        self.draining = True
        count = 0
        for gate in self._gates.values():
            outcome = HoldOutcome.RELEASED if gate.routable else HoldOutcome.SHUTDOWN
            for hold in list(gate._waiters):
                hold.resolve(outcome)
                count += 1
        return count

    def held(self, key: TargetKey) -> int:
        gate = self._gates.get(key)
        return gate.held if gate else 0
