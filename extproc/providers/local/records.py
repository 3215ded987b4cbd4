"""Replicas that outlive zerohop: their records in the state dir, recognising a live one after a restart, and
the lock that keeps two zerohops off one state dir.

Each replica runs in its own process group (its pid is the group id). A record holds the pid, the port, the
command and the process's start time from /proc (so a pid reused by another process never matches). After a
crash or restart, a recorded replica still running the same command on the same port is adopted; anything
else left in a recorded group (a shell-wrapped app whose shell died) is stopped, so no orphan holds a port.
Linux only (/proc); elsewhere nothing is adopted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from extproc.providers.local.config import ConfigError

RECORDS_FILE = "replicas.json"
LOCK_FILE = "zerohop.lock"
MARKER_VARIABLE = "ZEROHOP_REPLICA"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; the command name before it may contain spaces and parens."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None if there is no such process (or a zombie)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def marker(target: str, port: int) -> str:
    """The environment entry every replica (and whatever it starts) carries: which replica it belongs to."""
    return f"{MARKER_VARIABLE}={target}:{port}"


def _carries(pid: int, entry: str) -> bool:
    try:
        return entry.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def group_members(pgid: int, started_since: int, entry: str) -> list[int]:
    """Live processes of process group `pgid`, started no earlier than `started_since`, whose environment
    has `entry`: a group id reused by an unrelated process never matches."""
    members = []
    for path in Path("/proc").iterdir():
        if not path.name.isdigit():
            continue
        fields = _stat_fields(int(path.name))
        if fields is None or fields[0] == "Z":
            continue
        if int(fields[2]) == pgid and int(fields[19]) >= started_since and _carries(int(path.name), entry):
            members.append(int(path.name))
    return members


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    target: str
    pid: int
    port: int
    argv: tuple[str, ...]
    started: int

    def is_running(self) -> bool:
        """The recorded process itself is still running (same pid, same start time)."""
        return start_time(self.pid) == self.started

    def stop_leftovers(self) -> int:
        """SIGKILL whatever of the replica's process group is still running; returns how many."""
        members = group_members(self.pid, self.started, marker(self.target, self.port))
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return len(members)


class ReplicaRecords:
    """The records file in the state dir, rewritten whole (atomically) on every change."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RECORDS_FILE
        self._records: dict[int, ReplicaRecord] = {}

    def load(self) -> list[ReplicaRecord]:
        """The records a previous zerohop left; unreadable entries are dropped."""
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        found = []
        for item in raw if isinstance(raw, list) else []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                found.append(
                    ReplicaRecord(
                        str(item["target"]),
                        int(item["pid"]),
                        int(item["port"]),
                        tuple(str(a) for a in item["argv"]),
                        int(item["started"]),
                    )
                )
        return found

    def flush(self) -> None:
        """Write what this zerohop holds now (dropping the records of a previous one it did not adopt)."""
        self._write()

    def add(self, record: ReplicaRecord) -> None:
        self._records[record.pid] = record
        self._write()

    def remove(self, pid: int) -> None:
        if self._records.pop(pid, None) is not None:
            self._write()

    def _write(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps([asdict(r) for r in self._records.values()]))
        os.replace(temporary, self.path)


class StateDirLock:
    """An exclusive lock on the state dir for this process's lifetime (released by the kernel on a crash)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"state dir {self.path.parent} is in use by another zerohop (pid {holder}); "
                "give each zerohop its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
