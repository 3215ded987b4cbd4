"""zerohop's side-by-side benchmark: `python -m bench` (or `make bench`).

One run starts every setup against the same upstream (an Envoy answering `direct_response`), measures
them interleaved round by round (wrk), then all at once request by request (`paired`), times zerohop's
own handler against the bare one in-process (`hotpath`), measures zerohop's cold-start overhead through
the gateway's admin API (`coldstart`) and through an Istio gateway pod's stats (`coldstats`), saves the raw
numbers as JSON under `bench/results/` and regenerates `docs/performance.md` from that JSON.
`python -m bench --only cold --merge-into bench/results/RUN.json` measures the cold starts alone and puts them
into a saved run. See `python -m bench --help`.

Apart from it, `python -m bench.scale --targets N` (with `scale_emulator`, the API emulator it fills) measures
zerohop on the Kubernetes provider with N targets: ready time, memory per target, and ext_proc latency while
the leader syncs, during a burst of EndpointSlice updates and during `/metrics` and `/status` fetches.
"""
