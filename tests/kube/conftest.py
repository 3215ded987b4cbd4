"""Every test here may start the Kubernetes provider, whose first sync freezes the heap (`heap.first_sync`):
thaw it afterwards, so what one test left behind is collected as usual in the others."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _thawed_heap() -> Iterator[None]:
    yield
    gc.unfreeze()
