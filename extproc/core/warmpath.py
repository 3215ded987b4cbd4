"""The warm path: which virtual hosts may skip ext_proc (open) and which must keep it (gated), and the counts
of requests that went past zerohop while open.

A target is *eligible* once it has been routable and active (its metric above zero) for `open_after`
seconds without a break. A virtual host is opened only when every target reachable through it is eligible,
and gated again as soon as one is not (idle: its rate window emptied; or its endpoints vanished). Each
virtual host goes GATED -> OPENING (written open, not yet confirmed by the gateway) -> OPEN -> CLOSING
(written gated, not yet confirmed) -> GATED; only the gateway's own loaded config moves a switch to its end.

While any virtual host of a target is not GATED, the target's requests may bypass zerohop, so zerohop no
longer sees them arrive, nor the target go idle or cold in time: `TargetState.forced_active` is then true,
and KEDA's IsActive answers true, so a scale to zero can only follow a confirmed gate.

Counting from the gateway's stats (`StatsCounter`): each scrape adds `upstream_rq_total`'s increase (a
decrease is a restart: the new value is the increase, as Prometheus' rate() reads a reset) minus what
ext_proc counted itself in the same interval, so a request that went through zerohop is never counted twice
and one that did not is never lost, whichever way a switch is going. Standard library only; no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from extproc.core.httpso import TargetKey
from extproc.core.registry import TargetState


class WarmPathMode(enum.Enum):
    """`--warm-path`: whether warm traffic may skip ext_proc."""

    AUTO = "auto"  # open where the provider can switch and count the gateways, else ext-proc
    OPEN = "open"  # warm virtual hosts skip ext_proc; counted from the gateway's stats
    EXT_PROC = "ext-proc"  # every request asks zerohop (exact per-request in-flight, warm-request spans)


class PathState(enum.StrEnum):
    """Where a virtual host's switch stands. Values appear in /status."""

    GATED = "gated"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"


def counter_increase(previous: int | None, current: int) -> int:
    """How much a monotonic counter grew between two reads; a smaller value means it was reset (the gateway
    restarted), and everything it counted since is the increase. None: no previous read, nothing known yet."""
    if previous is None:
        return 0
    if current < previous:
        return current
    return current - previous


class GatewayCounters:
    """One monotonic counter kept by several gateways (each its own), read now and then.

    `increase` takes this read's values by gateway and returns how much they grew together since the last
    read, with a reset per gateway read as Prometheus' rate() reads one. A gateway missing from a read (its
    stats could not be fetched) keeps its last value, so what it counted meanwhile arrives with its next
    read; a gateway seen for the first time only sets its baseline (its earlier requests are not known to
    be new), so a new gateway pod loses at most one read interval of counts and never counts a total twice.
    """

    __slots__ = ("_last", "reset")

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self.reset = False  # the last `increase` saw a gateway restart

    def increase(self, values: Mapping[str, int]) -> int:
        grown = 0
        self.reset = False
        for gateway, value in values.items():
            previous = self._last.get(gateway)
            if previous is not None and value < previous:
                self.reset = True
            grown += counter_increase(previous, value)
            self._last[gateway] = value
        return grown

    def forget(self, gateways: Iterable[str]) -> None:
        """Gateways that are gone: a later gateway of the same name starts from a new baseline."""
        for gateway in gateways:
            self._last.pop(gateway, None)


class StatsCounter:
    """The requests of one target that went past ext_proc, from successive reads of the gateway counters.

    `add` takes each gateway's `upstream_rq_total` and ext_proc's own request count at the same moment, and
    returns the requests only the gateways saw since the previous read. A request ext_proc counted whose
    upstream request the gateway has not counted yet makes the difference negative: that is carried to the
    next read rather than dropped, or the request would be counted again then.
    """

    __slots__ = ("_carry", "_gateways", "_own")

    def __init__(self) -> None:
        self._gateways: GatewayCounters | None = None
        self._own = 0
        self._carry = 0

    @property
    def started(self) -> bool:
        return self._gateways is not None

    def add(self, gateway_totals: Mapping[str, int], own_total: int) -> int:
        if self._gateways is None:
            self._gateways = GatewayCounters()
            self._gateways.increase(gateway_totals)
            self._own = own_total
            return 0
        seen = self._gateways.increase(gateway_totals)
        if self._gateways.reset:
            self._carry = 0  # a restarted gateway: what ext_proc counted for the old one is not in the new one
        difference = seen - (own_total - self._own) + self._carry
        self._own = own_total
        self._carry = min(0, difference)
        return max(0, difference)

    def own_counted(self, count: int) -> None:
        """`count` requests were just added to the target's own count from the gateway's stats: they are
        not ext_proc's, so the next read must not subtract them."""
        self._own += count


@dataclass(slots=True)
class _Target:
    since: float | None = None  # routable and active without a break since (monotonic)
    counter: StatsCounter | None = None


class WarmPath:
    """Decides per virtual host whether ext_proc is skipped; the caller writes and confirms the switches.

    `set_hosts` gives the targets and the virtual hosts each is reachable through; `routable_changed` follows
    which targets are routable. Call `update` on every tick: it returns the set of virtual hosts the gateway
    config should have open. After writing a config, call `confirmed(open_hosts)` once every gateway has
    loaded it. A round costs what the routable targets and the hosts not gated cost, not the whole table:
    at 10,000 targets mostly at zero, a tick must not stall the requests.
    """

    def __init__(self, open_after: float) -> None:
        self.open_after = open_after
        self._hosts: dict[str, PathState] = {}  # hosts not GATED (a host absent here is gated)
        self._targets: dict[TargetKey, _Target] = {}  # routable or counted targets only
        self._by_target: dict[TargetKey, tuple[str, ...]] = {}
        self._members: dict[str, set[TargetKey]] = {}
        self._states: dict[TargetKey, TargetState] = {}
        self._routable: set[TargetKey] = set()
        self.gated_unexpectedly = 0
        self.unconfirmable: set[str] = set()  # from the last `update`: would open, but no switch of it confirms

    def set_hosts(self, states: Iterable[TargetState], hosts: Mapping[TargetKey, Iterable[str]]) -> None:
        """The current targets (all of them) and the virtual hosts each is reachable through."""
        states = list(states)
        known = {state.key for state in states}
        self.apply(
            [(state, tuple(hosts.get(state.key, ()))) for state in states], [k for k in self._states if k not in known]
        )

    def apply(self, changed: Iterable[tuple[TargetState, tuple[str, ...]]], removed: Iterable[TargetKey]) -> None:
        """Targets added or changed (with the virtual hosts each is reachable through) and targets removed:
        costs what changed, so a table of 10,000 targets can change a few at a time."""
        for key in removed:
            self._states.pop(key, None)
            self._routable.discard(key)
            self._targets.pop(key, None)
            for name in self._by_target.pop(key, ()):
                self._unlink(name, key)
        not_gated = self._hosts
        for state, names in changed:
            key = state.key
            for name in self._by_target.get(key, ()):
                if name not in names:
                    self._unlink(name, key)
            self._states[key] = state
            self._by_target[key] = names
            for name in names:
                self._members.setdefault(name, set()).add(key)
            if state.gate.routable:
                self._routable.add(key)
            else:
                self._routable.discard(key)
            # Not GATED exactly when one of its hosts is not (a host absent from `_hosts` is gated).
            forced = bool(not_gated) and any(name in not_gated for name in names)
            if state.forced_active is not forced:
                state.forced_active = forced

    def _unlink(self, name: str, key: TargetKey) -> None:
        members = self._members.get(name)
        if members is not None:
            members.discard(key)
            if not members:
                del self._members[name]

    def routable_changed(self, key: TargetKey, routable: bool) -> None:
        if routable:
            self._routable.add(key)
        else:
            self._routable.discard(key)

    def assume_open(self, names: Iterable[str]) -> None:
        """The gateways may run these virtual hosts open (a config written before this process decided):
        they count as OPEN, so their targets stay active for KEDA, until a confirmed gate says otherwise."""
        names = list(names)
        for name in names:
            self._hosts[name] = PathState.OPEN
        self._refresh_forced(names)

    def forget_all(self) -> None:
        """Another process decides now (leadership moved): nothing here is open any more, and no target is
        kept active on this process's account."""
        names = list(self._hosts)
        self._hosts.clear()
        self._targets.clear()
        self._refresh_forced(names)

    def host_state(self, name: str) -> PathState:
        return self._hosts.get(name, PathState.GATED)

    def target_state(self, key: TargetKey) -> PathState:
        """GATED or OPEN when all its virtual hosts agree, else the switch under way (CLOSING wins)."""
        names = self._by_target.get(key, ())
        if not names:
            return PathState.GATED
        states = {self._hosts.get(name, PathState.GATED) for name in names}
        if len(states) == 1:
            return next(iter(states))
        return PathState.CLOSING if PathState.CLOSING in states else PathState.OPENING

    def bypassing(self) -> list[TargetState]:
        """Targets some of whose requests may skip ext_proc now: their counts must come from the gateway."""
        keys = {key for name in self._hosts for key in self._members.get(name, ())}
        return [self._states[key] for key in keys if key in self._states]

    def settling(self) -> list[TargetState]:
        """Gated targets whose gateway counter still runs: the read after their gate was confirmed is due."""
        return [
            self._states[key]
            for key, target in self._targets.items()
            if target.counter is not None and key in self._states and self.target_state(key) is PathState.GATED
        ]

    def has_counter(self, key: TargetKey) -> bool:
        target = self._targets.get(key)
        return target is not None and target.counter is not None

    def counter(self, key: TargetKey) -> StatsCounter:
        target = self._targets.setdefault(key, _Target())
        if target.counter is None:
            target.counter = StatsCounter()
        return target.counter

    def routable_lost(self, key: TargetKey) -> bool:
        """The target's endpoints vanished. True when it was not gated: it must be gated at once (the caller
        writes the config right away rather than at the next tick)."""
        self._routable.discard(key)
        target = self._targets.get(key)
        if target is not None:
            target.since = None
        if self.target_state(key) is PathState.GATED:
            return False
        self.gated_unexpectedly += 1
        return True

    def eligible(self, state: TargetState, now: float) -> bool:
        target = self._targets.setdefault(state.key, _Target())
        snapshot = state.snapshot(now)
        # Whatever it scales on: a request in the rate window, or one still in flight (a long request keeps
        # the target from going idle under it).
        active = snapshot.rate > 0 or snapshot.in_flight > 0
        if not (state.gate.routable and active):
            target.since = None
            return False
        if target.since is None:
            target.since = now
        return now - target.since >= self.open_after

    def update(
        self, now: float, *, may_open: bool = True, confirmable: Callable[[str], bool] | None = None
    ) -> frozenset[str]:
        """Recompute which virtual hosts should be open; returns that set (what the config should say).
        `may_open` False (the gateways cannot be counted now): every host is gated. `confirmable`: whether a
        switch of that host could be confirmed on every gateway; a gated host that would open but is not
        stays gated and is listed in `unconfirmable` (the caller finds out, then the next update opens it)."""
        self.unconfirmable = set()
        eligible: dict[TargetKey, bool] = {}
        for key in self._routable:
            state = self._states.get(key)
            if state is not None:
                eligible[key] = self.eligible(state, now)
        for key in [key for key, target in self._targets.items() if key not in self._routable]:
            self._targets[key].since = None
            if self._targets[key].counter is None:
                del self._targets[key]
        # Only hosts of routable targets can open, and only hosts not gated can close.
        candidates = {name for key, ok in eligible.items() if ok for name in self._by_target.get(key, ())}
        changed: list[str] = []
        for name in candidates | set(self._hosts):
            keys = self._members.get(name, ())
            want = may_open and bool(keys) and all(eligible.get(key, False) for key in keys)
            current = self._hosts.get(name, PathState.GATED)
            if want and current is PathState.GATED and confirmable is not None and not confirmable(name):
                self.unconfirmable.add(name)
            elif want and current in (PathState.GATED, PathState.CLOSING):
                self._hosts[name] = PathState.OPENING
                changed.append(name)
            elif not want and current in (PathState.OPEN, PathState.OPENING):
                self._hosts[name] = PathState.CLOSING
                changed.append(name)
        self._refresh_forced(changed)
        return self.written_open()

    def written_open(self) -> frozenset[str]:
        return frozenset(n for n, s in self._hosts.items() if s in (PathState.OPENING, PathState.OPEN))

    def close_all(self, keys: Iterable[TargetKey]) -> frozenset[str]:
        """Gate every virtual host of `keys` now (endpoints vanished); returns what the config should say."""
        changed = []
        for key in keys:
            for name in self._by_target.get(key, ()):
                if self._hosts.get(name) in (PathState.OPEN, PathState.OPENING):
                    self._hosts[name] = PathState.CLOSING
                    changed.append(name)
        self._refresh_forced(changed)
        return self.written_open()

    def confirmed(self, open_hosts: frozenset[str]) -> None:
        """Every gateway has loaded a config with exactly `open_hosts` open."""
        changed = []
        for name, state in list(self._hosts.items()):
            if name in open_hosts and state is PathState.OPENING:
                self._hosts[name] = PathState.OPEN
                changed.append(name)
            elif name not in open_hosts and state is PathState.CLOSING:
                del self._hosts[name]
                changed.append(name)
        self._refresh_forced(changed)

    def settled(self, key: TargetKey) -> None:
        """The target's last gateway counts after its gate was confirmed were read: forget the counter."""
        target = self._targets.get(key)
        if target is not None and self.target_state(key) is PathState.GATED:
            target.counter = None

    def _refresh_forced(self, names: Iterable[str]) -> None:
        for name in names:
            for key in self._members.get(name, ()):
                state = self._states.get(key)
                if state is not None:
                    state.forced_active = self.target_state(key) is not PathState.GATED
