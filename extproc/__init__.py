"""zerohop: scale HTTP workloads to and from zero from inside the Envoy / Istio gateway, with no extra hop.

Package map, one room per line; imports point only to the rooms listed before a room's own line
(tests/unit/test_architecture.py enforces it):

- `core`: targets, routes, traffic counters, the cold gate, activation, the HTTPScaledObject model; stdlib only
- `envoy`: the ext_proc servicer, its answers, Envoy and Istio config, what each gateway has loaded
- `keda`: the external scaler servicer, the built-in autoscaler, the count exchange between replicas
- `providers`: where targets come from and how they wake (`providers.local`, `providers.kubernetes`)
- `observability`: /metrics, OpenTelemetry, logs, the admin HTTP server and the status page
- `dev`: the demo, its sample app, an Envoy process runner
- `app`: settings, server wiring and lifecycle, the `zerohop` command line
"""

__version__ = "0.1.0"
