"""Local provider: targets from a config file, replicas as local processes, endpoints as xDS files."""
