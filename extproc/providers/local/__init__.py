"""Local provider: targets from a config file, replicas as local processes, endpoints as xDS files.

- `config`: the config file's HTTPScaledObject and LocalWorkload documents; `provider`: `LocalProvider`
- `replicas`: replicas as process groups, probed and converged on a desired count
- `records`: replicas recorded in the state dir, adopted after a restart; the state dir's lock
- `xds_files`: the routes, clusters and endpoints files the gateway Envoy watches
- `warmswitch`: `--warm-path open`: a switch is a route-file rewrite, confirmed from each gateway's admin API
"""
