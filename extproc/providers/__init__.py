"""Providers: where targets come from and how their replicas are started (local processes, Kubernetes)."""
