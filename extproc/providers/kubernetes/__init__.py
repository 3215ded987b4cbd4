"""Kubernetes provider: HTTPScaledObjects, Services and EndpointSlices from the API server (kubernetes.aio)."""
