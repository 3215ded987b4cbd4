"""Run the emulator standalone: `python -m tests.kubeemu --port 8001`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from .emulator import KubeEmulator


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.kubeemu", description="Emulated Kubernetes API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--bookmark-interval", type=float, default=1.0)
    parser.add_argument(
        "--no-auto-namespaces",
        action="store_true",
        help="answer 404 for creates in missing namespaces, like a real server",
    )
    parser.add_argument("--kubelet", action="store_true", help="run the fake kubelet + EndpointSlice controller")
    parser.add_argument(
        "--ready-delay", type=float, default=0.5, help="seconds before a fake replica turns ready (with --kubelet)"
    )
    parser.add_argument("--kubeconfig", help="also write a kubeconfig file here")
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with KubeEmulator(
        host=args.host,
        port=args.port,
        bookmark_interval=args.bookmark_interval,
        auto_create_namespaces=not args.no_auto_namespaces,
    ) as emu:
        if args.kubelet:
            emu.enable_kubelet(ready_delay=args.ready_delay)
        if args.kubeconfig:
            emu.kubeconfig(args.kubeconfig)
        print(f"kubeemu serving on {emu.url}", flush=True)
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_serve(_parse()))


if __name__ == "__main__":
    main()
