"""An emulated Kubernetes API server for tests that drive the official client.

    async with KubeEmulator() as emu:
        async with emu.api_client() as api:
            ...

See `KubeEmulator` for the test-side API (direct store access, fault
injection, request log, fake kubelet/EndpointSlice controller).
"""

from .apiserver import JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH
from .emulator import DEFAULT_NAMESPACES, KubeEmulator
from .errors import ApiError
from .kubelet import READY_DELAY_ANNOTATION, FakeKubelet, Replica
from .registry import DEFAULT_RESOURCES, Registry, ResourceType, ScalePaths
from .requestlog import Fault, RequestRecord
from .waiting import wait_for

__all__ = [
    "DEFAULT_NAMESPACES",
    "DEFAULT_RESOURCES",
    "JSON_PATCH",
    "MERGE_PATCH",
    "READY_DELAY_ANNOTATION",
    "STRATEGIC_PATCH",
    "ApiError",
    "FakeKubelet",
    "Fault",
    "KubeEmulator",
    "Registry",
    "Replica",
    "RequestRecord",
    "ResourceType",
    "ScalePaths",
    "wait_for",
]
