"""The local provider: targets from a config file, replicas as local processes, endpoints as EDS files.

It is what `zerohop serve --config FILE` runs outside Kubernetes: HTTPScaledObjects become routes and
targets, each target's LocalWorkload becomes a ReplicaSet, and every change of ready replicas is written
as an EDS file and reported routable only once the gateway Envoy has loaded it. Scaling decisions come
from outside (`scale()`), normally from the built-in autoscaler playing KEDA's part.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extproc.core.background import BackgroundTasks
from extproc.core.engine import Core
from extproc.core.httpso import ScaledTarget, TargetKey
from extproc.core.provider import ReplicaCounts
from extproc.core.warmpath import WarmPath
from extproc.envoy.config import reachable_hosts, route_configuration, target_cluster_name, target_clusters
from extproc.envoy.gatewayview import GatewayView
from extproc.envoy.warmswitch import WarmSwitch
from extproc.providers.local import config as local_config
from extproc.providers.local.config import ConfigError, LocalConfig, Workload
from extproc.providers.local.records import ReplicaRecord, ReplicaRecords, StateDirLock
from extproc.providers.local.replicas import Endpoints, ReplicaSet
from extproc.providers.local.warmswitch import LocalGateways
from extproc.providers.local.xds_files import XdsFiles

log = logging.getLogger(__name__)

_RELOAD_POLL = 1.0
# A changed file is read once its size and mtime have not moved for this long: an editor mid-save (truncated,
# then written) is read after it is done, not in between.
_SETTLE = 0.5


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The last config (re)load: applied as written or not, when, and the error that stopped it (with since when)."""

    success: bool
    last_success: float | None
    last_attempt: float | None
    error: str | None
    error_since: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "lastSuccess": _iso(self.last_success),
            "lastSuccessTimestamp": self.last_success,
            "lastAttempt": _iso(self.last_attempt),
            "error": None if self.error is None else {"message": self.error, "since": _iso(self.error_since)},
        }


@dataclass(frozen=True, slots=True)
class LocalStatus:
    """The local provider's part of /status: where its configuration and xDS files are, how the last reload went
    and each current problem of the config file with when it was first seen."""

    config: Path
    xds_dir: Path
    reload: ReloadStatus
    problems: tuple[tuple[local_config.Problem, float], ...]
    warm_path: dict[str, Any] | None = None

    @property
    def reload_success(self) -> bool:
        return self.reload.success

    @property
    def last_reload_success(self) -> float | None:
        return self.reload.last_success

    @property
    def rejected_documents(self) -> int:
        return sum(1 for problem, _ in self.problems if problem.severity == "error" and problem.document)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": "local",
            "config": str(self.config),
            "xdsDir": str(self.xds_dir),
            "reload": self.reload.as_dict(),
            "problems": [{**problem.as_dict(), "since": _iso(since)} for problem, since in self.problems],
            **({} if self.warm_path is None else {"warmPath": self.warm_path}),
        }


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
        drain_timeout: float = 0.0,
        autoscaled: bool = True,
        warm_path: WarmPath | None = None,
        stats_interval: float = 1.0,
    ) -> None:
        """`autoscaled=False`: nothing else drives replicas, so each target runs `replicas.min` replicas,
        also after an edit of `replicas.min` (with the autoscaler, the autoscaler applies it)."""
        self._drain_timeout = drain_timeout
        self.config_path = config_path.resolve()
        # A state directory zerohop made itself is removed when it stops (replica logs included).
        self._own_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="zerohop-"))
        self.xds = XdsFiles(xds_dir or self.state_dir / "xds")
        self._lock = StateDirLock(self.state_dir)
        self._records = ReplicaRecords(self.state_dir)
        # Replicas an earlier zerohop left running, by target, until the first config is applied.
        self._previous: dict[str, list[ReplicaRecord]] = {}
        self._gateway = GatewayView(envoy_admin, eds_settle_delay)
        self._core: Core | None = None
        self._config: LocalConfig | None = None
        self._sets: dict[TargetKey, ReplicaSet] = {}
        self._targets: dict[TargetKey, ScaledTarget] = {}
        self._stamp: tuple[int, int] | None = None
        # The last reload: whether the file was applied as written, when that last happened, the error that
        # stopped a reload (the file unusable as a whole) and each current problem with when it was first seen.
        self.reload_ok = True
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.reload_error: tuple[str, float] | None = None
        self._problems: dict[str, tuple[local_config.Problem, float]] = {}
        self._autoscaled = autoscaled
        self._tasks = BackgroundTasks()
        # --warm-path open: the virtual hosts written without ext_proc, and the loop that switches them.
        self._warm_path = warm_path
        self._stats_interval = stats_interval
        self._open_hosts: frozenset[str] = frozenset()
        self.warm_switch: WarmSwitch | None = None

    @property
    def targets(self) -> dict[TargetKey, ScaledTarget]:
        return dict(self._targets)

    async def start(self, core: Core) -> None:
        self._core = core
        if self._warm_path is not None:
            gateways = LocalGateways(self._gateway, self._write_open_hosts, lambda: self.xds.routes_version)
            self.warm_switch = WarmSwitch(core, self._warm_path, gateways, self._stats_interval)
        self._lock.acquire()
        self._stamp = self._stat()
        config = local_config.load(self.config_path)
        for record in self._records.load():
            self._previous.setdefault(record.target, []).append(record)
        self._apply(config)
        for records in self._previous.values():
            for record in records:
                record.stop_leftovers()
        self._previous = {}
        self._records.flush()
        self._record(config)
        self._tasks.spawn(self._watch_config(), name="config reload")
        if self.warm_switch is not None:
            self._tasks.spawn(self.warm_switch.run(), name="warm path")

    def _write_open_hosts(self, open_hosts: frozenset[str]) -> None:
        self._open_hosts = open_hosts
        self.xds.write_routes(route_configuration(self._targets.values(), open_hosts=open_hosts))

    def wake(self, key: TargetKey) -> None:
        # Scaling is the autoscaler's job (it hears the same wake through StreamIsActive, as KEDA would).
        log.debug("wake %s", key)

    def reconfirm(self, key: TargetKey) -> None:
        # A release reached a gateway without the endpoint: publish again and wait until it has loaded it.
        replica_set = self._sets.get(key)
        if replica_set is not None:
            self._tasks.spawn(self._publish(key, replica_set.endpoints()), name=f"reconfirm {key}")

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

    def status(self) -> LocalStatus:
        error = self.reload_error
        return LocalStatus(
            self.config_path,
            self.xds.directory,
            ReloadStatus(
                self.reload_ok,
                self.last_success,
                self.last_attempt,
                None if error is None else error[0],
                None if error is None else error[1],
            ),
            tuple((problem, since) for problem, since in self._problems.values()),
            None if self.warm_switch is None else self.warm_switch.status(),
        )

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.config_path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _record(self, config: LocalConfig) -> None:
        now = time.time()
        self.last_attempt = now
        self.reload_error = None
        old = self._problems
        self._problems = {str(p): (p, old[str(p)][1] if str(p) in old else now) for p in config.problems}
        self.reload_ok = not any(p.severity == "error" for p in config.problems)
        if self.reload_ok:
            self.last_success = now

    def _failed(self, message: str) -> None:
        now = time.time()
        self.last_attempt = now
        self.reload_ok = False
        since = self.reload_error[1] if self.reload_error is not None and self.reload_error[0] == message else now
        self.reload_error = (message, since)

    def reload(self) -> None:
        """Read the config file again and apply it; a file that cannot be used keeps the previous config."""
        try:
            config = local_config.load(self.config_path, self._config)
        except ConfigError as exc:
            log.error("config reload failed, keeping the previous config: %s", exc)
            self._failed(str(exc))
            return
        if config.empty and self._targets:
            log.warning(
                "config %s has no documents: removing all %d target(s) and stopping their replicas",
                self.config_path,
                len(self._targets),
            )
        else:
            log.info("config %s changed; reloading", self.config_path)
        for key in config.kept:
            log.warning("%s: its document is invalid; keeping its last good version until it is fixed", key)
        self._apply(config)
        self._record(config)

    def _apply(self, config: LocalConfig) -> None:
        assert self._core is not None
        for problem in config.problems:
            log.log(logging.ERROR if problem.severity == "error" else logging.WARNING, "%s", problem)
        targets = {t.key: t for t in config.targets}
        self._config = config
        cwd = self.config_path.parent
        for key in [k for k in self._sets if k not in targets]:
            self._tasks.spawn(self._sets.pop(key).stop(), name=f"replicas stop {key}", cancel_on_close=False)
        new_sets: list[tuple[ReplicaSet, ScaledTarget, int]] = []
        for key, target in targets.items():
            workload = config.workload_for(target)
            assert workload is not None
            existing = self._sets.get(key)
            adopted = 0
            if existing is None:
                replica_set = self._sets[key] = self._new_set(target, workload, cwd)
                adopted = replica_set.start()
                new_sets.append((replica_set, target, adopted))
            else:
                replica_set = existing
                if replica_set.workload != workload:
                    log.info("%s: LocalWorkload changed; replicas started from now on use it", key)
                    replica_set.workload = workload
            old = self._targets.get(key)
            # Adopted replicas are in the endpoints file their zerohop left: the gateway keeps routing to them.
            if (old is None and not adopted) or (
                old is not None and target_cluster_name(old) != target_cluster_name(target)
            ):
                self.xds.write_endpoints(target_cluster_name(target), replica_set.endpoints())
            if old is not None and old.min_replicas != target.min_replicas and not self._autoscaled:
                log.info("%s: replicas.min %d -> %d", key, old.min_replicas, target.min_replicas)
                replica_set.scale(target.min_replicas)
        self._targets = targets
        self.xds.write_clusters(target_clusters(targets.values(), self.xds.directory))
        self.xds.write_routes(route_configuration(targets.values(), open_hosts=self._open_hosts))
        clusters = {target_cluster_name(t): t.key for t in targets.values()}
        self._core.apply_targets(targets.values(), clusters)
        if self._warm_path is not None:
            self._warm_path.set_hosts(self._core.registry, reachable_hosts(targets.values()))
        for replica_set, target, adopted in new_sets:
            # Like a Deployment created with replicas.min (or as many as were adopted); the autoscaler takes it
            # from there.
            replica_set.scale(max(target.min_replicas, adopted))

    def _new_set(self, target: ScaledTarget, workload: Workload, cwd: Path) -> ReplicaSet:
        if workload.working_dir is not None and not workload.working_dir.is_absolute():
            cwd = cwd / workload.working_dir
        elif workload.working_dir is not None:
            cwd = workload.working_dir
        key = target.key

        async def publish(endpoints: Endpoints) -> None:
            await self._publish(key, endpoints)

        adopt = self._previous.pop(str(key), [])
        return ReplicaSet(workload, cwd, self.state_dir / "logs", publish, self._records, adopt)

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

    async def _wait_idle(self, deadline: float) -> None:
        """Until no request is in flight to a replica, as the gateway (with --envoy-admin) and zerohop's own
        counts see it, or until `deadline`."""
        clusters = [target_cluster_name(t) for t in self._targets.values()]
        while time.monotonic() < deadline:
            counts = await asyncio.gather(*(self._gateway.active_requests(c) for c in clusters))
            followed = sum(state.traffic.in_flight for state in self._core.registry) if self._core else 0
            if not any(counts) and not followed:
                return
            await asyncio.sleep(0.05)

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(_RELOAD_POLL)
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                continue
            self._stamp = await self._settled(stamp)
            self.reload()

    async def _settled(self, stamp: tuple[int, int] | None) -> tuple[int, int] | None:
        """Wait until the file has not changed for `_SETTLE` seconds; its size and mtime then."""
        while True:
            await asyncio.sleep(_SETTLE)
            now = self._stat()
            if now == stamp:
                return stamp
            stamp = now

    async def stop(self) -> None:
        """Take the replicas out of the gateway, let the requests it already sent them finish (at most
        `drain_timeout`), then stop them."""
        deadline = time.monotonic() + self._drain_timeout
        await self._tasks.close()
        await asyncio.gather(*(s.withdraw() for s in self._sets.values()), return_exceptions=True)
        await self._wait_idle(deadline)
        await asyncio.gather(*(s.stop() for s in self._sets.values()), return_exceptions=True)
        await self._gateway.close()
        self._lock.release()
        if self._own_state_dir:
            await asyncio.to_thread(shutil.rmtree, self.state_dir, True)
