"""The cold gate: holds, release on routable, timeouts, caps, wake throttling, drain and removal."""

from __future__ import annotations

import asyncio

import pytest

from extproc.core.activation import ActivationBus
from extproc.core.coldstart import ColdGate, Hold, HoldOutcome
from extproc.core.httpso import TargetKey

KEY = TargetKey("default", "app")


def gate(per_target: int = 10, total: int = 100, rewake: float = 2.0) -> ColdGate:
    return ColdGate(max_held_per_target=per_target, max_held_total=total, rewake_interval=rewake)


async def test_hold_is_released_when_routable() -> None:
    cold = gate()
    hold = cold.try_hold(cold.for_target(KEY))
    assert hold is not None
    waiting = asyncio.create_task(hold.wait(5))
    await asyncio.sleep(0)
    assert cold.held(KEY) == 1
    assert cold.held_total == 1
    cold.set_routable(KEY, True)
    assert await waiting is HoldOutcome.RELEASED
    hold.close()
    assert cold.held(KEY) == 0
    assert cold.held_total == 0


async def test_hold_times_out() -> None:
    cold = gate()
    hold = cold.try_hold(cold.for_target(KEY))
    assert hold is not None
    started = asyncio.get_running_loop().time()
    assert await hold.wait(0.05) is HoldOutcome.TIMEOUT
    assert asyncio.get_running_loop().time() - started >= 0.05
    hold.close()
    assert cold.held_total == 0


async def test_already_routable_resolves_at_once() -> None:
    cold = gate()
    cold.set_routable(KEY, True)
    hold = cold.try_hold(cold.for_target(KEY))
    assert hold is not None
    assert await asyncio.wait_for(hold.wait(5), 0.1) is HoldOutcome.RELEASED
    hold.close()


async def test_cancellation_releases_the_hold() -> None:
    cold = gate()
    hold = cold.try_hold(cold.for_target(KEY))
    assert hold is not None

    async def client() -> None:
        try:
            await hold.wait(10)
        finally:
            hold.close()

    task = asyncio.create_task(client())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cold.held(KEY) == 0
    assert cold.held_total == 0
    hold.close()  # idempotent
    assert cold.held_total == 0


async def test_per_target_and_global_caps() -> None:
    cold = gate(per_target=2, total=3)
    a, b = cold.for_target(KEY), cold.for_target(TargetKey("default", "other"))
    holds = [cold.try_hold(a), cold.try_hold(a)]
    assert all(holds)
    assert cold.try_hold(a) is None
    assert cold.try_hold(b) is not None
    assert cold.try_hold(b) is None  # global cap of 3 reached
    for hold in holds:
        assert hold is not None
        hold.close()
    assert cold.try_hold(a) is not None


async def test_wake_hooks_fire_once_per_rewake_interval() -> None:
    cold = gate(rewake=60)
    woken: list[TargetKey] = []
    cold.add_wake_hook(woken.append)
    target = cold.for_target(KEY)
    for _ in range(5):
        hold = cold.try_hold(target)
        assert hold is not None
        hold.close()
    assert woken == [KEY]
    assert target.wakes == 1


async def test_over_cap_still_wakes() -> None:
    cold = gate(per_target=1, rewake=0)
    woken: list[TargetKey] = []
    cold.add_wake_hook(woken.append)
    first = cold.try_hold(cold.for_target(KEY))
    assert first is not None
    assert cold.try_hold(cold.for_target(KEY)) is None
    assert woken == [KEY, KEY]
    first.close()


async def test_failing_wake_hook_does_not_break_holding() -> None:
    cold = gate()

    def broken(_key: TargetKey) -> None:
        raise RuntimeError("provider down")

    cold.add_wake_hook(broken)
    hold = cold.try_hold(cold.for_target(KEY))
    assert hold is not None
    hold.close()


async def test_drain_answers_everything_and_refuses_new_holds() -> None:
    cold = gate()
    warm_key = TargetKey("default", "warm")
    cold_hold = cold.try_hold(cold.for_target(KEY))
    warm_gate = cold.for_target(warm_key)
    warm_hold = cold.try_hold(warm_gate)
    assert cold_hold is not None
    assert warm_hold is not None
    # The warm target became routable in the same instant as the drain, before its hold resolved.
    warm_gate.routable = True
    assert cold.drain() == 2
    assert await cold_hold.wait(5) is HoldOutcome.SHUTDOWN
    assert await warm_hold.wait(5) is HoldOutcome.RELEASED
    assert cold.try_hold(cold.for_target(KEY)) is None
    cold_hold.close()
    warm_hold.close()


async def test_forget_ends_holds_with_removed() -> None:
    cold = gate()
    hold = cold.try_hold(cold.for_target(KEY))
    assert hold is not None
    cold.forget(KEY)
    assert await hold.wait(5) is HoldOutcome.REMOVED
    hold.close()
    assert cold.held_total == 0


async def test_activation_bus_delivers_and_coalesces() -> None:
    bus = ActivationBus()
    one = bus.subscribe(KEY)
    every = bus.subscribe()
    other = bus.subscribe(TargetKey("x", "y"))
    bus.publish(KEY)
    bus.publish(KEY)
    assert await asyncio.wait_for(one.next(), 0.1) == [KEY]
    assert await asyncio.wait_for(every.next(), 0.1) == [KEY]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(other.next(), 0.05)
    assert bus.subscribers(KEY) == 1
    one.close()
    assert bus.subscribers(KEY) == 0


async def test_a_wrong_release_makes_the_target_unroutable_and_asks_for_a_new_confirmation() -> None:
    cold = gate()
    asked: list[TargetKey] = []
    cold.add_reconfirm_hook(asked.append)
    cold.set_routable(KEY, True, guessed=True)
    target = cold.for_target(KEY)
    assert target.watching
    cold.released(target, probe=False, routed=False)
    assert not target.routable
    assert not target.watching
    assert asked == [KEY]
    assert cold.release_failures == 1
    # The rest of the same wrong release is counted, but asks for no second confirmation.
    cold.released(target, probe=False, routed=False)
    assert asked == [KEY]
    assert cold.release_failures == 2
    # A new request is held again.
    hold = cold.try_hold(target)
    assert hold is not None
    assert not hold._future.done()
    hold.close()


async def wrong_guess(cold: ColdGate, holds: int) -> tuple[list[Hold], list[asyncio.Task[HoldOutcome]]]:
    """A guessed release the gateway could not route, then `holds` requests held again."""
    target = cold.for_target(KEY)
    cold.set_routable(KEY, True, guessed=True)
    cold.released(target, probe=False, routed=False)
    assert target.failed_guesses == 1
    held = [cold.try_hold(target) for _ in range(holds)]
    assert all(hold is not None for hold in held)
    waits = [asyncio.create_task(hold.wait(5)) for hold in held if hold is not None]
    await asyncio.sleep(0)
    return [hold for hold in held if hold is not None], waits


async def test_after_a_wrong_guess_one_request_goes_first_and_the_rest_follow_when_it_was_routed() -> None:
    cold = gate()
    holds, waits = await wrong_guess(cold, 3)
    cold.set_routable(KEY, True, guessed=True)  # the provider guesses again
    await asyncio.sleep(0)
    target = cold.for_target(KEY)
    assert [w.done() for w in waits].count(True) == 1
    assert target.probing
    assert not target.routable
    # Another guess while the probe is out changes nothing: its verdict decides.
    cold.set_routable(KEY, True, guessed=True)
    await asyncio.sleep(0)
    assert [w.done() for w in waits].count(True) == 1
    [probe] = [hold for hold in holds if hold.probe]
    cold.released(target, probe=probe.probe, routed=True)
    assert target.routable
    assert target.failed_guesses == 0
    assert [await w for w in waits] == [HoldOutcome.RELEASED] * 3


async def test_a_probe_the_gateway_could_not_route_keeps_the_rest_held() -> None:
    cold = gate()
    asked: list[TargetKey] = []
    cold.add_reconfirm_hook(asked.append)
    holds, waits = await wrong_guess(cold, 2)
    asked.clear()
    cold.set_routable(KEY, True, guessed=True)
    await asyncio.sleep(0)
    [probe] = [hold for hold in holds if hold.probe]
    cold.released(cold.for_target(KEY), probe=probe.probe, routed=False)
    assert asked == [KEY]
    assert cold.for_target(KEY).failed_guesses == 2  # the provider waits longer before its next guess
    assert sum(w.done() for w in waits) == 1
    for w in waits:
        w.cancel()


async def test_a_lost_probe_asks_again_and_an_exact_confirmation_releases_everyone() -> None:
    cold = gate()
    asked: list[TargetKey] = []
    cold.add_reconfirm_hook(asked.append)
    holds, waits = await wrong_guess(cold, 3)
    asked.clear()
    cold.set_routable(KEY, True, guessed=True)
    await asyncio.sleep(0)
    [probe] = [hold for hold in holds if hold.probe]
    cold.released(cold.for_target(KEY), probe=probe.probe, routed=None)  # its client went away: no verdict
    assert asked == [KEY]
    assert not cold.for_target(KEY).probing
    cold.set_routable(KEY, True)  # the provider saw the gateway itself this time
    assert [await w for w in waits] == [HoldOutcome.RELEASED] * 3


async def test_a_confirmed_release_is_not_watched_and_the_watch_window_ends() -> None:
    cold = ColdGate(max_held_per_target=10, max_held_total=100, watch_seconds=0.05)
    seen: list[tuple[TargetKey, bool]] = []
    ended = asyncio.Event()

    def watched(key: TargetKey, on: bool) -> None:
        seen.append((key, on))
        if not on:
            ended.set()

    cold.add_watch_hook(watched)
    cold.set_routable(KEY, True)
    assert not cold.for_target(KEY).watching
    assert seen == []
    cold.set_routable(KEY, False)
    cold.set_routable(KEY, True, guessed=True)
    assert cold.for_target(KEY).watching
    await asyncio.wait_for(ended.wait(), 1.0)
    assert not cold.for_target(KEY).watching
    assert seen == [(KEY, True), (KEY, False)]


async def test_a_held_request_wakes_its_target_again_every_rewake_interval_without_new_arrivals() -> None:
    # If KEDA missed the first push (restarting, its stream reconnecting), only a re-wake brings the target up.
    cold = gate(rewake=0.05)
    woken: list[float] = []
    again = asyncio.Event()

    def wake(_key: TargetKey) -> None:
        woken.append(asyncio.get_running_loop().time())
        if len(woken) == 3:
            again.set()

    cold.add_wake_hook(wake)
    target = cold.for_target(KEY)
    hold = cold.try_hold(target)
    assert hold is not None
    await asyncio.wait_for(again.wait(), 5)
    assert woken[1] - woken[0] >= 0.05 - 0.002
    assert woken[2] - woken[1] >= 0.05 - 0.002
    assert target.wakes == 3
    hold.close()
    assert target.rewake_handle is None  # nothing held: no timer left behind


async def test_re_waking_stops_once_the_target_is_routable_or_forgotten() -> None:
    cold = gate(rewake=0.05)
    woken: list[TargetKey] = []
    cold.add_wake_hook(woken.append)
    target = cold.for_target(KEY)
    hold = cold.try_hold(target)
    assert hold is not None
    assert target.rewake_handle is not None
    cold.set_routable(KEY, True)
    assert await hold.wait(5) is HoldOutcome.RELEASED
    hold.close()
    assert target.rewake_handle is None
    other = cold.for_target(TargetKey("default", "other"))
    held = cold.try_hold(other)
    assert held is not None
    assert other.rewake_handle is not None
    cold.forget(other.key)
    assert other.rewake_handle is None
    held.close()
    assert woken == [KEY, other.key]
