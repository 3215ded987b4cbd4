"""The local provider: targets from a config file, replicas as local processes, endpoints as EDS files.

It is what `zerohop serve --config FILE` runs outside Kubernetes: HTTPScaledObjects become routes and
targets, each target's LocalWorkload becomes a ReplicaSet, and every change of ready replicas is written
as an EDS file and reported routable only once the gateway Envoy has loaded it. Scaling decisions come
from outside (`scale()`), normally from the built-in autoscaler playing KEDA's part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from extproc.core.engine import Core
from extproc.core.httpso import ScaledTarget, TargetKey
from extproc.core.provider import ReplicaCounts
from extproc.envoy.config import route_configuration, target_cluster_name, target_clusters
from extproc.envoy.gatewayview import GatewayView
from extproc.providers.local import config as local_config
from extproc.providers.local.config import ConfigError, LocalConfig, Workload
from extproc.providers.local.replicas import Endpoints, ReplicaSet
from extproc.providers.local.xds_files import XdsFiles

log = logging.getLogger(__name__)

_RELOAD_POLL = 1.0


class LocalProvider:
    """Implements the core's Provider interface with local processes."""

    def __init__(
        self,
        config_path: Path,
        *,
        state_dir: Path | None = None,
        xds_dir: Path | None = None,
        envoy_admin: tuple[str, ...] = (),
        eds_settle_delay: float = 0.25,
        autoscaled: bool = True,
    ) -> None:
        """`autoscaled=False`: nothing else drives replicas, so each target runs `replicas.min` replicas,
        also after an edit of `replicas.min` (with the autoscaler, the autoscaler applies it)."""
        self.config_path = config_path.resolve()
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="zerohop-"))
        self.xds = XdsFiles(xds_dir or self.state_dir / "xds")
        self._gateway = GatewayView(envoy_admin, eds_settle_delay)
        self._core: Core | None = None
        self._config: LocalConfig | None = None
        self._sets: dict[TargetKey, ReplicaSet] = {}
        self._targets: dict[TargetKey, ScaledTarget] = {}
        self._mtime: float | None = None
        self._autoscaled = autoscaled
        self._reload_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def targets(self) -> dict[TargetKey, ScaledTarget]:
        return dict(self._targets)

    async def start(self, core: Core) -> None:
        self._core = core
        config = local_config.load(self.config_path)
        self._mtime = self._stat()
        self._apply(config)
        self._reload_task = asyncio.create_task(self._watch_config(), name="config reload")

    def wake(self, key: TargetKey) -> None:
        # Scaling is the autoscaler's job (it hears the same wake through StreamIsActive, as KEDA would).
        log.debug("wake %s", key)

    def reconfirm(self, key: TargetKey) -> None:
        # A release reached a gateway without the endpoint: publish again and wait until it has loaded it.
        replica_set = self._sets.get(key)
        if replica_set is not None:
            self._spawn(self._publish(key, replica_set.endpoints()))

    def scale(self, key: TargetKey, replicas: int) -> None:
        replica_set = self._sets.get(key)
        if replica_set is None:
            raise KeyError(f"no local target {key}")
        replica_set.scale(replicas)

    def replicas(self, key: TargetKey) -> ReplicaCounts | None:
        replica_set = self._sets.get(key)
        return None if replica_set is None else ReplicaCounts(replica_set.desired, replica_set.ready)

    def ready(self) -> bool:
        return self._core is not None

    def status(self) -> dict[str, Any]:
        return {"provider": "local", "config": str(self.config_path), "xdsDir": str(self.xds.directory)}

    def _stat(self) -> float | None:
        try:
            return self.config_path.stat().st_mtime
        except OSError:
            return None

    def _apply(self, config: LocalConfig) -> None:
        assert self._core is not None
        for problem in config.problems:
            log.error("%s", problem)
        targets = {t.key: t for t in config.targets}
        self._config = config
        cwd = self.config_path.parent
        for key in [k for k in self._sets if k not in targets]:
            self._spawn(self._sets.pop(key).stop())
        new_sets: list[tuple[ReplicaSet, ScaledTarget]] = []
        for key, target in targets.items():
            workload = config.workload_for(target)
            assert workload is not None
            existing = self._sets.get(key)
            if existing is None:
                replica_set = self._sets[key] = self._new_set(target, workload, cwd)
                new_sets.append((replica_set, target))
            else:
                replica_set = existing
                if replica_set.workload != workload:
                    log.info("%s: LocalWorkload changed; replicas started from now on use it", key)
                    replica_set.workload = workload
            old = self._targets.get(key)
            if old is None or target_cluster_name(old) != target_cluster_name(target):
                self.xds.write_endpoints(target_cluster_name(target), replica_set.endpoints())
            if old is not None and old.min_replicas != target.min_replicas and not self._autoscaled:
                log.info("%s: replicas.min %d -> %d", key, old.min_replicas, target.min_replicas)
                replica_set.scale(target.min_replicas)
        self._targets = targets
        self.xds.write_clusters(target_clusters(targets.values(), self.xds.directory))
        self.xds.write_routes(route_configuration(targets.values()))
        clusters = {target_cluster_name(t): t.key for t in targets.values()}
        self._core.apply_targets(targets.values(), clusters)
        for replica_set, target in new_sets:
            replica_set.start()
            # Like a Deployment created with replicas.min; the autoscaler takes it from there.
            replica_set.scale(target.min_replicas)

    def _new_set(self, target: ScaledTarget, workload: Workload, cwd: Path) -> ReplicaSet:
        if workload.working_dir is not None and not workload.working_dir.is_absolute():
            cwd = cwd / workload.working_dir
        elif workload.working_dir is not None:
            cwd = workload.working_dir
        key = target.key

        async def publish(endpoints: Endpoints) -> None:
            await self._publish(key, endpoints)

        return ReplicaSet(workload, cwd, self.state_dir / "logs", publish)

    async def _publish(self, key: TargetKey, endpoints: Endpoints) -> None:
        assert self._core is not None
        target = self._targets.get(key)
        if target is None:
            return
        cluster = target_cluster_name(target)
        if not endpoints:
            self._core.set_routable(key, False)
        self.xds.write_endpoints(cluster, endpoints)
        await self._gateway.wait_loaded(cluster, endpoints)
        if endpoints:
            self._core.set_routable(key, True, guessed=not self._gateway.exact)
        log.info("%s: gateway routes to %d replica(s)", key, len(endpoints))

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(_RELOAD_POLL)
            mtime = self._stat()
            if mtime is None or mtime == self._mtime:
                continue
            self._mtime = mtime
            try:
                config = local_config.load(self.config_path)
            except ConfigError as exc:
                log.error("config reload failed, keeping the previous config: %s", exc)
                continue
            log.info("config %s changed; reloading", self.config_path)
            self._apply(config)

    async def stop(self) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload_task
        await asyncio.gather(*(s.stop() for s in self._sets.values()), return_exceptions=True)
        await self._gateway.close()
