"""Leader election on a `coordination.k8s.io/v1` Lease, so that of several zerohop replicas exactly one writes
ScaledObjects, status and EnvoyFilters (all of them serve traffic and watch).

The holder renews the Lease every `renew_interval`; the others take it over once they have seen the same
holder and renewTime unchanged for `lease_duration` (measured on their own clock, as client-go does, so
clock skew between nodes does not matter). Writes use the Lease's resourceVersion, so two candidates racing
for it cannot both win. A leader that cannot renew within `lease_duration` stops leading.
(kubernetes.aio's own leaderelection module cannot create its Lease in client v37: it passes `pretty=True`,
which the client's validation rejects.)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable

from extproc.core.background import BackgroundTasks
from extproc.providers.kubernetes.api import LEASES, JsonObj, KubeApi, KubeError

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaigns for the Lease `namespace/name` as `identity`; `on_change(leading)` reports transitions."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        on_change: Callable[[bool], None],
        *,
        lease_duration: float = 15.0,
        renew_interval: float = 5.0,
        retry_interval: float = 2.0,
    ) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._on_change = on_change
        self.lease_duration = lease_duration
        self.renew_interval = renew_interval
        self.retry_interval = retry_interval
        self.leading = False
        self.holder = ""
        self._observed: tuple[str, str] = ("", "")
        self._observed_at = time.monotonic()
        self._renewed_at = 0.0
        self._tasks = BackgroundTasks()

    def start(self) -> None:
        self._tasks.spawn(self._run(), name=f"leader election {self.name}")

    async def stop(self) -> None:
        await self._tasks.close()
        if self.leading:
            self._set(False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._release(), 2.0)

    async def _run(self) -> None:
        while True:
            try:
                leading = await self._campaign()
            except KubeError as exc:
                log.warning("leader election: %s", exc)
                leading = self.leading and time.monotonic() - self._renewed_at < self.lease_duration
            self._set(leading)
            await asyncio.sleep(self.renew_interval if leading else self.retry_interval)

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            log.info("%s leading (Lease %s/%s)", "now" if leading else "no longer", self.namespace, self.name)
            self._on_change(leading)

    def _spec(self, transitions: int, acquired: str | None = None) -> JsonObj:
        now = _now()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _campaign(self) -> bool:
        lease = await self._api.get(LEASES, self.namespace, self.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(0),
            }
            return await self._write(lambda: self._api.create(LEASES, self.namespace, body))
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        observed = (holder, str(spec.get("renewTime") or ""))
        if observed != self._observed:
            self._observed = observed
            self._observed_at = time.monotonic()
        self.holder = holder
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            lease["spec"] = {**spec, **self._spec(transitions, spec.get("acquireTime"))}
        elif not holder or time.monotonic() - self._observed_at > duration:
            log.info("Lease %s/%s held by %r expired; taking it", self.namespace, self.name, holder)
            lease["spec"] = {**spec, **self._spec(transitions + 1)}
        else:
            return False
        return await self._write(lambda: self._api.replace(LEASES, self.namespace, self.name, lease))

    async def _write(self, call: Callable[[], object]) -> bool:
        try:
            await call()  # type: ignore[misc]
        except KubeError as exc:
            if exc.code == 409:
                return False
            raise
        self.holder = self.identity
        self._renewed_at = time.monotonic()
        return True

    async def _release(self) -> None:
        lease = await self._api.get(LEASES, self.namespace, self.name)
        if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            lease["spec"]["holderIdentity"] = ""
            await self._api.replace(LEASES, self.namespace, self.name, lease)
