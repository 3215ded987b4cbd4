"""Kubernetes provider: HTTPScaledObjects, Services and EndpointSlices from the API server (kubernetes.aio).

- `provider`: the Provider the core talks to; `api`, `informer`: API calls and list-then-watch caches
- `targets`, `scaledobjects`, `reconciler`: objects to targets, the ScaledObjects and status zerohop writes
- `endpoints`: ready endpoints per Service; `subsets`, `subsetwatch`: DestinationRule subsets (their clusters'
  targets, their pods' endpoints) and the watches behind them
- `gatewaypods`, `warmgateways`: the gateway pods and the warm path's switch through the EnvoyFilter
- `leader`, `scaling`, `ratelimit`, `heap`: leader election, scale from zero, the client's rate limit, memory
"""
