"""The Kubernetes warm path's gateway side without a network: a host opens only once every gateway pod has
answered its probe 'gated' (so a switch of it can be confirmed), and a host some pod cannot answer for stays
gated instead of blocking every later switch."""

from __future__ import annotations

from typing import Any

from extproc.core.warmpath import PathState
from extproc.envoy.gatewayprobe import GateSeen
from extproc.envoy.gatewaystats import GatewayPod
from extproc.providers.kubernetes.warmgateways import KubeGateways
from tests.unit.test_warmpath import setup, spec, traffic


class FakeStats:
    def __init__(self, *pods: GatewayPod) -> None:
        self.pods = list(pods)


class FakeProber:
    """Answers by (pod IP, host); records every probe."""

    def __init__(self, answers: dict[tuple[str, str], GateSeen]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []
        self.last_error = ""

    async def probe(self, ip: str, port: int, host: str) -> GateSeen:
        self.asked.append((ip, host))
        return self.answers.get((ip, host), GateSeen.UNKNOWN)

    async def close(self) -> None:
        pass


def gateways(answers: dict[tuple[str, str], GateSeen], *pods: GatewayPod) -> tuple[KubeGateways, FakeProber]:
    prober = FakeProber(answers)

    async def write(_open: frozenset[str]) -> None:
        pass

    stats: Any = FakeStats(*pods)
    return KubeGateways(write, stats, 8080, 0.0, prober=prober), prober  # type: ignore[arg-type]


A, B = GatewayPod("gw-a", "10.0.0.1"), GatewayPod("gw-b", "10.0.0.2")


async def test_a_host_every_pod_answers_gated_for_is_confirmable_until_the_pods_change() -> None:
    answers = {(pod.ip, "app.test"): GateSeen.GATED for pod in (A, B)}
    kube, prober = gateways(answers, A, B)
    assert not kube.confirmable("app.test")
    await kube.check_confirmable(["app.test"])
    assert kube.confirmable("app.test")
    assert sorted(prober.asked) == [("10.0.0.1", "app.test"), ("10.0.0.2", "app.test")]
    kube._stats.pods.append(GatewayPod("gw-c", "10.0.0.3"))  # type: ignore[attr-defined]
    assert not kube.confirmable("app.test")  # a new pod has not answered yet


async def test_a_host_one_pod_cannot_answer_for_stays_gated_and_is_not_asked_again_at_once() -> None:
    answers = {(A.ip, "tls.test"): GateSeen.GATED}  # gw-b has no such virtual host on the probe port
    kube, prober = gateways(answers, A, B)
    await kube.check_confirmable(["tls.test"])
    assert not kube.confirmable("tls.test")
    assert "gw-b: unknown" in kube.unconfirmable()["tls.test"]
    asked = len(prober.asked)
    await kube.check_confirmable(["tls.test"])
    assert len(prober.asked) == asked  # waits `_RECHECK_UNCONFIRMABLE` before probing it again


def test_warm_path_opens_only_confirmable_hosts_and_lists_the_others() -> None:
    _core, warm, states = setup(spec("a", "a.test"), spec("b", "b.test"), open_after=1.0)
    for state in states.values():
        _core.set_routable(state.key, True)
        traffic(state, 100.0)
    warm.update(100.0)  # eligible from now
    for state in states.values():
        traffic(state, 101.5)
    opened = warm.update(101.5, confirmable=lambda host: host == "a.test")
    assert opened == {"a.test"}
    assert warm.unconfirmable == {"b.test"}
    assert warm.host_state("b.test") is PathState.GATED
    assert not states["b"].forced_active
