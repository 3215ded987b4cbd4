"""gRPC core settings zerohop runs with; environment variables, so they must be set before grpc is imported.

- `GRPC_ENABLE_FORK_SUPPORT=false`: local replicas are started with fork() and exec at once, so gRPC's fork
  handlers buy nothing and would log a warning for every replica started.
- `GRPC_EXPERIMENTS=-event_engine_listener,-event_engine_for_all_other_endpoints`: serve connections on gRPC
  core's own polling (iomgr) rather than its EventEngine thread pool. A warm request is one gRPC round trip,
  and with EventEngine every read or write crosses one more thread before grpc.aio's poller hands it to the
  event loop. `python -m bench` measures the same bare server both ways (setups E and F, docs/performance.md):
  on the 2-core dev box 7% less CPU per request at saturation and 20% at a low rate, 6% more requests/s,
  and 0.08 ms less added latency (paired, p50).

Either variable, when already set, is left as it is: an operator can turn the experiments back on with
`GRPC_EXPERIMENTS=` (empty) or any other value, should a gRPC release change them.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

DEFAULTS: dict[str, str] = {
    "GRPC_ENABLE_FORK_SUPPORT": "false",
    "GRPC_EXPERIMENTS": "-event_engine_listener,-event_engine_for_all_other_endpoints",
}


def apply(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set each default that `environ` does not set already; returns the values now in effect."""
    for name, value in DEFAULTS.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in DEFAULTS}
