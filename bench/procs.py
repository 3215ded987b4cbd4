"""Child processes of the benchmark: free ports, CPU time from /proc, CPU pinning, and start/stop of Python
children so that every one of them is gone when the run ends, however it ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import aiohttp

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Children run `python -m bench.…` / `python -m extproc`; from here both packages import.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (every thread, live or exited), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name may hold spaces and parentheses; the numeric fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> float:
    """Time on CPU of a process's live threads, in nanosecond resolution (from /proc/PID/task/*/schedstat).

    Finer than `cpu_seconds` (one clock tick), for short idle windows; misses threads that exit meanwhile."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


@contextlib.contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with this process pinned to `cpus`, so children started inside inherit the pinning."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def taskset(cpus: set[int] | None, argv: Sequence[str]) -> list[str]:
    """`argv` prefixed with `taskset -c CPUS` when pinning is asked for."""
    if cpus is None:
        return list(argv)
    return ["taskset", "-c", ",".join(str(cpu) for cpu in sorted(cpus)), *argv]


class Child:
    """A Python child process (zerohop, a bare ext_proc server) in its own session, logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = [sys.executable, *argv]
        self.log_path = log_path
        self.env = {**os.environ, **env} if env else None
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} not started"
        return self.process.pid

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Own session: Ctrl-C at the terminal reaches the bench only, which then stops children in order.
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    async def wait_http_ok(self, url: str, timeout: float = 20.0) -> None:
        """Wait until `url` answers 200 (the child's readiness), failing early if the child exits."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while time.monotonic() < deadline:
                self.check_alive()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name}: {url} not ready after {timeout:g}s:\n{self.log_tail()}")

    async def wait_tcp(self, port: int, timeout: float = 20.0) -> None:
        """Wait until 127.0.0.1:`port` accepts connections, failing early if the child exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise TimeoutError(f"{self.name}: port {port} not listening after {timeout:g}s:\n{self.log_tail()}")

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL of the whole process group if it has not exited within `timeout`."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
