"""An InterceptorRoute-only target with the real Envoy and the local provider: the route and the ScaledObject
naming it are the only config (no HTTPScaledObject); it scales from zero on its rules, is counted on both
metrics, and the scaler answers its ScaledObject's trigger as KEDA calls it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from extproc._proto import externalscaler_pb2 as pb
from tests.helpers import wait_for
from tests.integration.stack import Stack, app

pytestmark = pytest.mark.envoy

ROUTE = """
---
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {name: shop}
spec:
  target: {service: shop, port: 8080}
  rules:
    - hosts: [shop.test]
      paths: [{value: /api}]
    - hosts: [tenant.test]
      headers: [{name: x-tenant, value: blue}]
  scalingMetric:
    concurrency: {targetValue: 4}
    requestRate: {targetValue: 10, window: 10s, granularity: 1s}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: shop-so}
spec:
  scaleTargetRef: {name: shop-app}
  minReplicaCount: 0
  maxReplicaCount: 2
  triggers:
    - type: external-push
      metadata: {scalerAddress: "zerohop:9090", interceptorRoute: shop}
"""


def trigger_ref(port: int) -> pb.ScaledObjectRef:
    # What KEDA sends for the user's ScaledObject: its own name, every trigger metadata key.
    metadata = {"scalerAddress": f"127.0.0.1:{port}", "interceptorRoute": "shop"}
    return pb.ScaledObjectRef(name="shop-so", namespace="default", scalerMetadata=metadata)


async def test_an_interceptor_route_scales_from_zero_and_is_counted_on_both_metrics(tmp_path: Path) -> None:
    async with Stack(tmp_path, ROUTE + app("shop-app", startup_delay=0.2, work=0.3)) as stack:
        state = stack.state("shop")
        provider = stack.server.provider
        counts = provider.replicas(state.key)
        assert counts is not None
        assert (counts.desired, counts.ready) == (0, 0)
        assert stack.scaler is not None
        ref = trigger_ref(stack.server.scaler_port)

        specs = (await stack.scaler.GetMetricSpec(ref)).metricSpecs
        assert [(s.metricName, s.targetSizeFloat) for s in specs] == [
            ("http_shop_concurrency", 4.0),
            ("http_shop_rate", 10.0),
        ]
        assert not (await stack.scaler.IsActive(ref)).result

        # Cold: held while the workload the ScaledObject names starts, then answered by it.
        cold = asyncio.create_task(stack.get("shop.test", "/api/items"))
        await wait_for(lambda: state.gate.held == 1, 5, 0.01, what="the cold request held")
        in_flight = await stack.scaler.GetMetrics(
            pb.GetMetricsRequest(scaledObjectRef=ref, metricName=specs[0].metricName)
        )
        assert [(v.metricName, v.metricValueFloat) for v in in_flight.metricValues] == [("http_shop_concurrency", 1.0)]
        assert (await stack.scaler.IsActive(ref)).result
        first = await cold
        assert first.status == 200
        assert first.headers.get("x-zerohop-cold-start") == "true"

        # The second rule (its own host and header) reaches the same target; a request no rule takes does not.
        replies = await asyncio.gather(
            *(stack.get("tenant.test", "/", headers={"x-tenant": "blue"}) for _ in range(3)),
            stack.get("shop.test", "/api"),
        )
        assert Counter(r.status for r in replies) == {200: 4}
        assert state.traffic.requests == 5
        other = await stack.get("tenant.test", "/", headers={"x-tenant": "red"})
        assert other.status == 404
        assert state.traffic.requests == 5

        rate = await stack.scaler.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName="http_shop_rate"))
        [value] = rate.metricValues
        assert value.metricName == "http_shop_rate"
        assert value.metricValueFloat > 0
        await wait_for(lambda: state.traffic.in_flight == 0, 5, 0.02, what="in-flight back to 0")
