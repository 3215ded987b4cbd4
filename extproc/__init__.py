"""zerohop: scale HTTP workloads to and from zero from inside the Envoy / Istio gateway, with no extra hop.

Package map (dependencies point inward, towards the core):

- core: `httpso` (HTTPScaledObject model), `routing`, `traffic`, `coldstart`, `activation`, `targets`, `core`
- Envoy-facing: `processor` (ext_proc servicer), `answers` (pre-serialised responses), `envoyconfig`,
  `istio` (EnvoyFilters, stats inclusion), what the gateway has loaded: `gatewayview` (admin API),
  `gatewaystats` (each gateway pod's stats) over `envoystats` (Prometheus stats reader), `envoyadmin`
- KEDA-facing: `scaler` (external scaler servicer), `autoscaler` (KEDA's part for the local provider)
- providers: `providers.local` (config file, local processes, xDS files), `providers.kubernetes` (informers,
  gateway pods, scale from zero, leader, reconciler)
- process: `server` (wiring, lifecycle), `admin` (HTTP), `settings`, `cli`, `demo`
"""

__version__ = "0.1.0"
