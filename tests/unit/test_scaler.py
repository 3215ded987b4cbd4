"""The KEDA external scaler API over real gRPC, called the way KEDA calls it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from extproc._proto import externalscaler_pb2 as pb
from extproc._proto import externalscaler_pb2_grpc as pb_grpc
from extproc.core import iroute
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey, parse
from extproc.keda.scaler import LocalCounts, ScalerServicer

RATE = TargetKey("shop", "rate")
CONCURRENCY = TargetKey("shop", "conc")


def spec(name: str, metric: dict[str, Any]) -> Any:
    return parse(
        {
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "hosts": [f"{name}.example"],
                "scaleTargetRef": {"name": name, "service": name, "port": 80},
                "scalingMetric": metric,
            },
        }
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[Core, grpc.aio.Channel]]:
    core = Core(hold_timeout=30, max_held_per_target=100, max_held_total=100)
    core.apply_targets(
        [spec("rate", {"requestRate": {"targetValue": 2.5}}), spec("conc", {"concurrency": {"targetValue": 7}})], {}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((ScalerServicer(core.router, core.bus, LocalCounts()).rpc_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield core, channel
    finally:
        await channel.close()
        await server.stop(0)


@pytest.fixture
def scaler(served: tuple[Core, grpc.aio.Channel]) -> tuple[Core, pb_grpc.ExternalScalerAsyncStub]:
    core, channel = served
    return core, pb_grpc.ExternalScalerStub(channel)


def ref(key: TargetKey, via_metadata: bool = True) -> pb.ScaledObjectRef:
    # KEDA sends the ScaledObject's name/namespace and every trigger metadata key.
    metadata = {"scalerAddress": "zerohop.zerohop-system:9090"}
    if via_metadata:
        metadata["httpScaledObject"] = key.name
    return pb.ScaledObjectRef(name=key.name, namespace=key.namespace, scalerMetadata=metadata)


async def test_metric_spec(scaler: tuple[Core, Any]) -> None:
    _core, stub = scaler
    response = await stub.GetMetricSpec(ref(RATE))
    [metric] = response.metricSpecs
    assert metric.metricName == "http-shop_002Frate"
    assert (metric.targetSize, metric.targetSizeFloat) == (3, 2.5)
    [conc] = (await stub.GetMetricSpec(ref(CONCURRENCY, via_metadata=False))).metricSpecs
    assert (conc.metricName, conc.targetSize, conc.targetSizeFloat) == ("http-shop_002Fconc", 7, 7.0)


async def test_metrics_rate_and_concurrency_in_int_and_float(scaler: tuple[Core, Any]) -> None:
    core, stub = scaler
    rate_state = core.registry.get(RATE)
    assert rate_state is not None
    now = time.monotonic()
    rate_state.traffic.rate.record(now, 3)
    [value] = (
        await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(RATE), metricName="http-shop_002Frate"))
    ).metricValues
    assert (value.metricName, value.metricValue, value.metricValueFloat) == ("http-shop_002Frate", 3, 3.0)

    conc_state = core.registry.get(CONCURRENCY)
    assert conc_state is not None
    conc_state.traffic.in_flight = 4
    [value] = (
        await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(CONCURRENCY), metricName="http-shop_002Fconc"))
    ).metricValues
    assert (value.metricValue, value.metricValueFloat) == (4, 4.0)


async def test_fractional_rate_rounds_the_int_field_up(scaler: tuple[Core, Any]) -> None:
    core, stub = scaler
    state = core.registry.get(RATE)
    assert state is not None
    window = state.traffic.rate
    base = float(int(time.monotonic()))
    window.record(base - 2.5)
    window.record(base - 1.5)
    window.record(base - 0.5)
    window.record(base - 0.4)
    [value] = (await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(RATE)))).metricValues
    assert value.metricValueFloat == pytest.approx(1.333)
    assert value.metricValue == 2


async def test_is_active_stays_true_while_the_warm_path_is_not_confirmed_gated(scaler: tuple[Core, Any]) -> None:
    core, stub = scaler
    state = core.registry.get(RATE)
    assert state is not None
    assert not (await stub.IsActive(ref(RATE))).result
    state.forced_active = True  # open or switching: requests may bypass zerohop, idle is not known
    assert (await stub.IsActive(ref(RATE))).result
    state.forced_active = False
    assert not (await stub.IsActive(ref(RATE))).result


async def test_is_active_follows_metric_and_held_requests(scaler: tuple[Core, Any]) -> None:
    core, stub = scaler
    assert not (await stub.IsActive(ref(CONCURRENCY))).result
    hold = core.cold_gate.try_hold(core.cold_gate.for_target(CONCURRENCY))
    assert hold is not None
    assert (await stub.IsActive(ref(CONCURRENCY))).result
    hold.close()
    assert not (await stub.IsActive(ref(CONCURRENCY))).result


async def test_unknown_object_is_not_found_naming_what_was_asked(scaler: tuple[Core, Any]) -> None:
    _core, stub = scaler
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetMetricSpec(
            pb.ScaledObjectRef(name="ghost", namespace="shop", scalerMetadata={"httpScaledObject": "gone"})
        )
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert "shop/gone" in (raised.value.details() or "")
    assert "ScaledObject shop/ghost" in (raised.value.details() or "")
    unknown = pb.ScaledObjectRef(name="x", namespace="y")
    for call in (stub.IsActive(unknown), stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=unknown))):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


METHODS = ["IsActive", "StreamIsActive", "GetMetricSpec", "GetMetrics"]


async def call_raw(channel: grpc.aio.Channel, method: str, payload: bytes) -> grpc.aio.AioRpcError:
    """Send `payload` as the request message, as a broken or hostile client would."""
    path = f"/externalscaler.ExternalScaler/{method}"

    async def call() -> None:
        if method == "StreamIsActive":
            async for _ in channel.unary_stream(path)(payload):
                pass
        else:
            await channel.unary_unary(path)(payload)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call()
    return raised.value


async def test_undecodable_requests_are_invalid_argument_and_one_log_line(
    served: tuple[Core, grpc.aio.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    _core, channel = served
    with caplog.at_level(logging.DEBUG):
        for _ in range(5):
            for method in METHODS:
                error = await call_raw(channel, method, b"\xff\xff\xff")
                assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, method
                assert "not a valid externalscaler message" in (error.details() or "")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_an_empty_scaled_object_ref_is_invalid_argument(scaler: tuple[Core, Any]) -> None:
    _core, stub = scaler
    for call in (
        stub.IsActive(pb.ScaledObjectRef()),
        stub.GetMetricSpec(pb.ScaledObjectRef(namespace="shop")),
        stub.GetMetrics(pb.GetMetricsRequest(metricName="http-shop/rate")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "names no ScaledObject" in (raised.value.details() or "")


async def test_a_huge_name_gets_a_bounded_not_found(scaler: tuple[Core, Any]) -> None:
    _core, stub = scaler
    huge = "n" * 65536
    ref = pb.ScaledObjectRef(name=huge, namespace=huge, scalerMetadata={"httpScaledObject": huge})
    for call in (stub.IsActive(ref), stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref))):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        details = raised.value.details() or ""
        assert len(details) < 2048
        assert "(65536 characters)" in details


async def test_stream_is_active_pushes_true_within_50ms_of_a_cold_request(scaler: tuple[Core, Any]) -> None:
    core, stub = scaler
    stream = stub.StreamIsActive(ref(CONCURRENCY))
    received: asyncio.Queue[tuple[float, bool]] = asyncio.Queue()

    async def read() -> None:
        async for message in stream:
            received.put_nowait((time.monotonic(), message.result))

    reader = asyncio.create_task(read())
    # The stream is open and idle: nothing is pushed while the target is inactive.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(received.get(), 0.2)
    started = time.monotonic()
    hold = core.cold_gate.try_hold(core.cold_gate.for_target(CONCURRENCY))
    at, result = await asyncio.wait_for(received.get(), 1.0)
    assert result is True
    assert at - started < 0.05, f"push took {(at - started) * 1000:.1f} ms"
    assert hold is not None
    hold.close()
    stream.cancel()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_stream_is_active_reports_current_activity_on_connect(scaler: tuple[Core, Any]) -> None:
    core, stub = scaler
    hold = core.cold_gate.try_hold(core.cold_gate.for_target(RATE))
    stream = stub.StreamIsActive(ref(RATE))
    first = await asyncio.wait_for(stream.read(), 1.0)
    assert first.result is True
    stream.cancel()
    assert hold is not None
    hold.close()
    await asyncio.sleep(0.05)
    assert core.bus.subscribers(RATE) == 0


# --- InterceptorRoute: the user's own ScaledObject names the route in its trigger --------------------------


def route_target(name: str, metric: dict[str, Any]) -> Any:
    return iroute.parse(
        {
            "apiVersion": "http.keda.sh/v1beta1",
            "kind": "InterceptorRoute",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "target": {"service": name, "port": 80},
                "rules": [{"hosts": [f"{name}.example"]}],
                "scalingMetric": metric,
            },
        }
    )


@pytest.fixture
async def routes() -> AsyncIterator[tuple[Core, pb_grpc.ExternalScalerAsyncStub]]:
    core = Core(hold_timeout=30, max_held_per_target=100, max_held_total=100)
    core.apply_targets(
        [
            route_target("both", {"concurrency": {"targetValue": 5}, "requestRate": {"targetValue": 20}}),
            route_target("rate", {"requestRate": {"targetValue": 2.5}}),
        ],
        {},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((ScalerServicer(core.router, core.bus, LocalCounts()).rpc_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield core, pb_grpc.ExternalScalerStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def so_ref(route: str) -> pb.ScaledObjectRef:
    # The user's ScaledObject has a name of its own; its trigger metadata names the route.
    metadata = {"scalerAddress": "zerohop.zerohop-system:9090", "interceptorRoute": route}
    return pb.ScaledObjectRef(name="my-app-so", namespace="shop", scalerMetadata=metadata)


async def test_a_route_with_both_metrics_reports_both_under_the_add_ons_names(routes: tuple[Core, Any]) -> None:
    _core, stub = routes
    specs = (await stub.GetMetricSpec(so_ref("both"))).metricSpecs
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in specs] == [
        ("http_both_concurrency", 5, 5.0),
        ("http_both_rate", 20, 20.0),
    ]
    [only] = (await stub.GetMetricSpec(so_ref("rate"))).metricSpecs
    assert (only.metricName, only.targetSize, only.targetSizeFloat) == ("http_rate_rate", 3, 2.5)


async def test_get_metrics_answers_the_metric_keda_asks_for(routes: tuple[Core, Any]) -> None:
    core, stub = routes
    state = core.registry.get(TargetKey("shop", "both"))
    assert state is not None
    state.traffic.in_flight = 4
    state.traffic.rate.record(time.monotonic(), 3)

    async def values(name: str) -> list[tuple[str, int, float]]:
        request = pb.GetMetricsRequest(scaledObjectRef=so_ref("both"), metricName=name)
        return [
            (v.metricName, v.metricValue, v.metricValueFloat) for v in (await stub.GetMetrics(request)).metricValues
        ]

    assert await values("http_both_concurrency") == [("http_both_concurrency", 4, 4.0)]
    assert await values("http_both_rate") == [("http_both_rate", 3, 3.0)]
    # Asked for no metric of its own (as the add-on's scaler answers): every metric.
    assert await values("") == [("http_both_concurrency", 4, 4.0), ("http_both_rate", 3, 3.0)]


async def test_a_route_is_active_on_either_metric(routes: tuple[Core, Any]) -> None:
    core, stub = routes
    state = core.registry.get(TargetKey("shop", "both"))
    assert state is not None
    assert not (await stub.IsActive(so_ref("both"))).result
    state.traffic.in_flight = 1
    assert (await stub.IsActive(so_ref("both"))).result
    state.traffic.in_flight = 0
    state.traffic.rate.record(time.monotonic(), 1)
    assert (await stub.IsActive(so_ref("both"))).result


async def test_an_unknown_route_is_not_found_naming_the_route(routes: tuple[Core, Any]) -> None:
    _core, stub = routes
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetMetricSpec(so_ref("missing"))
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    details = raised.value.details() or ""
    assert "InterceptorRoute shop/missing" in details
    assert "ScaledObject shop/my-app-so with interceptorRoute=missing" in details


async def test_stream_is_active_for_a_route_reports_a_held_request(routes: tuple[Core, Any]) -> None:
    core, stub = routes
    hold = core.cold_gate.try_hold(core.cold_gate.for_target(TargetKey("shop", "rate")))
    assert hold is not None
    stream = stub.StreamIsActive(so_ref("rate"))
    first = await asyncio.wait_for(stream.read(), 1.0)
    assert first.result is True
    stream.cancel()
    hold.close()
