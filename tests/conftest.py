"""Shared pytest setup: gRPC fork handling off (tests spawn replica processes while gRPC runs)."""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
