"""Replicas as local processes: start one per port, probe it until ready, and converge on a desired count.

`ReplicaSet` plays the Deployment controller for one target: it starts replicas on free ports of the
workload's range, restarts crashed ones with backoff, and on scale-down first takes a replica out of the
endpoints the gateway sees (awaiting `publish`) and only then stops its process, so no request is sent
to a replica that is going away.

Each replica is a process group of its own, stopped as a whole, and outlives a zerohop crash: it is
recorded in the state dir (records.py) and adopted by the next zerohop, so warm traffic keeps flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp

from extproc.core.background import BackgroundTasks
from extproc.providers.local.config import Workload
from extproc.providers.local.records import ReplicaRecord, ReplicaRecords, marker, start_time

log = logging.getLogger(__name__)

Endpoints = list[tuple[str, int]]
Publish = Callable[[Endpoints], Awaitable[None]]

_BACKOFF_MIN = 0.5
_BACKOFF_MAX = 30.0
_STABLE_AFTER = 30.0


class ReplicaPhase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    TERMINATING = "terminating"
    EXITED = "exited"


class AdoptedProcess:
    """A replica an earlier zerohop started: not this process's child, so its exit is seen through a pidfd
    and its exit status is unknown (-1)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = loop.create_future()
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except OSError:
            self._fd = None
            self._done()
            return
        loop.add_reader(self._fd, self._done)

    def _done(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        self.returncode = -1
        if not self._exited.done():
            self._exited.set_result(None)

    async def wait(self) -> int:
        await asyncio.shield(self._exited)
        return -1


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class Replica:
    """One process listening on one port."""

    def __init__(
        self, workload: Workload, port: int, cwd: Path, log_dir: Path, records: ReplicaRecords | None = None
    ) -> None:
        self.workload = workload
        self.port = port
        self.phase = ReplicaPhase.STARTING
        self.started_at = time.monotonic()
        self._cwd = cwd
        self._log_path = log_dir / f"{workload.key.namespace}_{workload.key.name}-{port}.log"
        self.process: asyncio.subprocess.Process | AdoptedProcess | None = None
        self._records = records
        self.adopted = False

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.workload.host, self.port)

    async def start(self) -> None:
        env = {**os.environ, **self.workload.env, "PORT": str(self.port)}
        name, _, value = marker(str(self.workload.key), self.port).partition("=")
        env[name] = value
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.workload.argv(self.port),
                cwd=self._cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group (stopped as a whole); not tied to zerohop's life (adopted after a crash).
                start_new_session=True,
            )
        log.info("replica %s:%d started (pid %d)", self.workload.key, self.port, self.process.pid)
        started = start_time(self.process.pid)
        if self._records is not None and started is not None:
            argv = tuple(self.workload.argv(self.port))
            self._records.add(ReplicaRecord(str(self.workload.key), self.process.pid, self.port, argv, started))

    def adopt(self, record: ReplicaRecord) -> None:
        """Take over a replica an earlier zerohop started (it is probed for readiness like a new one)."""
        self.process = AdoptedProcess(record.pid)
        self.adopted = True
        if self._records is not None:
            self._records.add(record)
        log.info("replica %s:%d adopted (pid %d)", self.workload.key, self.port, record.pid)

    async def wait_ready(self, session: aiohttp.ClientSession) -> bool:
        """Probe until ready (True), or until the process exits or the startup timeout passes (False)."""
        probe = self.workload.readiness
        deadline = self.started_at + self.workload.startup_timeout
        await asyncio.sleep(probe.initial_delay)
        while time.monotonic() < deadline:
            if self.exited:
                return False
            if self.phase is not ReplicaPhase.STARTING:
                return False
            if await self._probe_once(session):
                if self.phase is not ReplicaPhase.STARTING:
                    return False
                self.phase = ReplicaPhase.READY
                return True
            await asyncio.sleep(probe.period)
        log.warning("replica %s:%d not ready after %.0fs", self.workload.key, self.port, self.workload.startup_timeout)
        return False

    async def _probe_once(self, session: aiohttp.ClientSession) -> bool:
        probe = self.workload.readiness
        host, port = self.endpoint
        try:
            if probe.http_path is None:
                _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), probe.timeout)
                writer.close()
                return True
            url = f"http://{host}:{port}{probe.http_path}"
            timeout = aiohttp.ClientTimeout(total=probe.timeout)
            async with session.get(url, timeout=timeout, allow_redirects=False) as response:
                return response.status < 400
        except (OSError, aiohttp.ClientError, TimeoutError):
            return False

    @property
    def exited(self) -> bool:
        return self.process is None or self.process.returncode is not None

    async def stop(self) -> None:
        """SIGTERM the replica's process group; SIGKILL what is left of it after the grace period."""
        self.phase = ReplicaPhase.TERMINATING
        process = self.process
        if process is not None:
            pgid = process.pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.workload.termination_grace
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), self.workload.termination_grace)
            # The leader may be gone while what it started still runs (`sh -c 'app & wait'`).
            while _group_alive(pgid):
                if time.monotonic() >= deadline:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, signal.SIGKILL)
                    break
                await asyncio.sleep(0.02)
            await process.wait()
            if self._records is not None:
                self._records.remove(pgid)
        self.phase = ReplicaPhase.EXITED
        log.info("replica %s:%d stopped", self.workload.key, self.port)


class ReplicaSet:
    """Keeps `desired` replicas of one workload running and the gateway's endpoints in step with them."""

    def __init__(
        self,
        workload: Workload,
        cwd: Path,
        log_dir: Path,
        publish: Publish,
        records: ReplicaRecords | None = None,
        adopt: Sequence[ReplicaRecord] = (),
    ) -> None:
        self.workload = workload
        self._records = records
        self._adopt = list(adopt)
        self._cwd = cwd
        self._log_dir = log_dir
        self._publish = publish
        self.desired = 0
        self.replicas: list[Replica] = []
        self._changed = asyncio.Event()
        self._publish_lock = asyncio.Lock()
        self._published: Endpoints | None = None
        # Two owners, stopped in turn: the reconcile loop first, the replicas' own tasks once they are stopped.
        self._loop = BackgroundTasks()
        self._workers = BackgroundTasks()
        self._backoff = 0.0
        self._last_failure = -1e18
        self._next_start = 0.0
        self._session: aiohttp.ClientSession | None = None

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas if r.phase is ReplicaPhase.READY)

    def start(self) -> int:
        """Start reconciling; returns how many replicas of an earlier zerohop it adopted."""
        self._session = aiohttp.ClientSession()
        for record in self._adopt:
            argv = tuple(self.workload.argv(record.port))
            if record.port in self.workload.ports and record.argv == argv and record.is_running():
                replica = Replica(self.workload, record.port, self._cwd, self._log_dir, self._records)
                replica.adopt(record)
                self.replicas.append(replica)
                self._workers.spawn(self._run(replica), name=f"replica {self.workload.key}:{record.port}")
            elif stopped := record.stop_leftovers():
                log.info("%s: stopped %d leftover process(es) of an earlier replica", self.workload.key, stopped)
        self._adopt = []
        self._loop.spawn(self._reconcile_loop(), name=f"replicas {self.workload.key}")
        return len(self.replicas)

    def scale(self, replicas: int) -> None:
        replicas = max(0, min(replicas, len(self.workload.ports)))
        if replicas != self.desired:
            log.info("%s: scale %d -> %d", self.workload.key, self.desired, replicas)
            self.desired = replicas
            self._changed.set()

    def endpoints(self) -> Endpoints:
        return [r.endpoint for r in self.replicas if r.phase is ReplicaPhase.READY]

    async def _reconcile_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._reconcile()
            except Exception:
                log.exception("%s: reconcile failed", self.workload.key)

    async def _reconcile(self) -> None:
        self.replicas = [r for r in self.replicas if r.phase is not ReplicaPhase.EXITED]
        live = [r for r in self.replicas if r.phase in (ReplicaPhase.STARTING, ReplicaPhase.READY)]
        if len(live) < self.desired:
            wait = self._next_start - time.monotonic()
            if wait > 0:
                self._later(wait)
                return
            for _ in range(self.desired - len(live)):
                port = self._free_port()
                if port is None:
                    log.warning("%s: no free port in %s for another replica", self.workload.key, self.workload.ports)
                    self._later(1.0)
                    break
                replica = Replica(self.workload, port, self._cwd, self._log_dir, self._records)
                self.replicas.append(replica)
                self._workers.spawn(self._run(replica), name=f"replica {self.workload.key}:{port}")
        elif len(live) > self.desired:
            # Not-yet-ready replicas go first, then the newest ready ones.
            ranked = sorted(live, key=lambda r: (r.phase is ReplicaPhase.READY, -r.started_at))
            victims = ranked[: len(live) - self.desired]
            for replica in victims:
                replica.phase = ReplicaPhase.TERMINATING
            self._workers.spawn(self._retire(victims), name=f"retire replicas {self.workload.key}")

    def _later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._changed.set)

    def _free_port(self) -> int | None:
        used = {r.port for r in self.replicas}
        for port in self.workload.ports:
            if port not in used and port_is_free(self.workload.host, port):
                return port
        return None

    async def _run(self, replica: Replica) -> None:
        assert self._session is not None
        try:
            if not replica.adopted:
                await replica.start()
        except OSError as exc:
            log.error("%s: cannot start %s: %s", self.workload.key, " ".join(self.workload.argv(replica.port)), exc)
            replica.phase = ReplicaPhase.EXITED
            self._failed()
            return
        if not await replica.wait_ready(self._session):
            if replica.phase is ReplicaPhase.STARTING:
                await replica.stop()
                self._failed()
            return
        await self.publish()
        assert replica.process is not None
        code = await replica.process.wait()
        if replica.phase is ReplicaPhase.READY:
            log.warning("%s: replica on port %d exited with %s", self.workload.key, replica.port, code)
            replica.phase = ReplicaPhase.EXITED
            # What it started may still hold the port (`sh -c 'app & wait'` with the shell gone).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(replica.process.pid, signal.SIGKILL)
            if self._records is not None:
                self._records.remove(replica.process.pid)
            self._failed()
            await self.publish()

    def _failed(self) -> None:
        now = time.monotonic()
        if now - self._last_failure > _STABLE_AFTER:
            self._backoff = 0.0
        self._last_failure = now
        self._backoff = min(_BACKOFF_MAX, max(_BACKOFF_MIN, self._backoff * 2))
        self._next_start = now + self._backoff
        log.warning("%s: replica failed; next start in %.1fs", self.workload.key, self._backoff)
        self._changed.set()

    async def _retire(self, victims: list[Replica]) -> None:
        await self.publish()
        await asyncio.gather(*(replica.stop() for replica in victims))
        self._changed.set()

    async def publish(self) -> None:
        """Tell the gateway the current ready endpoints; returns once it has them (serialised)."""
        async with self._publish_lock:
            endpoints = self.endpoints()
            if endpoints == self._published:
                return
            await self._publish(endpoints)
            self._published = endpoints

    async def withdraw(self) -> None:
        """Stop reconciling and take every replica out of the gateway's endpoints; the processes keep running
        (for the requests already sent to them) until `stop()`."""
        await self._loop.close()
        for replica in self.replicas:
            if replica.phase is not ReplicaPhase.EXITED:
                replica.phase = ReplicaPhase.TERMINATING
        if self._published:
            # A gateway that does not confirm quickly is not waited for.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.publish(), 1.0)

    async def stop(self) -> None:
        """Stop every replica (endpoints first, then processes) and the reconcile loop."""
        await self.withdraw()
        await asyncio.gather(*(r.stop() for r in self.replicas), return_exceptions=True)
        await self._workers.close()
        if self._session is not None:
            await self._session.close()
