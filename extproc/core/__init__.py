"""The core: what zerohop knows and decides, with no I/O of its own. Standard library only.

- `httpso`: HTTPScaledObject documents parsed into typed targets; `durations`: Go duration strings
- `iroute`: InterceptorRoute documents parsed into the same targets, and the ScaledObject triggers naming them
- `placeholder`: placeholder pages, the add-on's template variables substituted safely
- `fieldcheck`: unknown fields in a document against a declared field tree, with the nearest valid name
- `registry`: the live state of every target; `routing`: the route table, an immutable snapshot
- `traffic`: per-target counters; `coldstart`: the cold gate and held requests; `activation`: wake fan-out
- `warmpath`: which virtual hosts skip ext_proc (open) and the counts read from the gateway while they do
- `provider`: the interface providers implement; `engine`: `Core`, all of the above wired together
- `background`: `BackgroundTasks`, the one owner of every long-lived object's background tasks
- `giveway`: CPU work on the event loop in short slices, with a real pause between them for requests
- `loglimit`: rate-limited log lines and clipped text, for what outside input can trigger
"""
