"""The Envoy side: what zerohop says to Envoy and what it reads back.

- `processor`: the ext_proc servicer; `answers`: its pre-serialised responses
- `config`: every piece of Envoy configuration zerohop writes; `istio`: the EnvoyFilters and stats inclusion
- `adminapi`, `gatewayview`: a gateway's loaded endpoints from its admin API (`--envoy-admin`, either provider)
- `stats`, `gatewaystats`: each gateway pod's Prometheus stats (Istio gateways); `gatewayprobe`: which
  config a gateway pod runs for a virtual host (gated or open), asked through the pod itself
- `warmswitch`: the warm-path loop (switch virtual hosts past ext_proc, count them from the gateways' stats)
"""
