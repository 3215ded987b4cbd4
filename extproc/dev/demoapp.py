"""The demo's sample app: a small HTTP server that takes a moment to boot, like a real service.

`python -m extproc.dev.demoapp --port 18080 --startup-delay 0.5` answers every path with 200 and a line naming
its port (and its `--name`, e.g. the version of a canary), after sleeping `--startup-delay` seconds before it
starts listening.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import cast


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY the second waits for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        work = float(self.server.work_seconds)  # type: ignore[attr-defined]
        if work:
            time.sleep(work)
        port = cast(HTTPServer, self.server).server_port
        name = str(self.server.app_name)  # type: ignore[attr-defined]
        body = f"hello from {name + ' ' if name else ''}replica :{port} (pid {os.getpid()})\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET
    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: bursts of new connections would time out.
    request_queue_size = 1024
    daemon_threads = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extproc.dev.demoapp", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--startup-delay", type=float, default=0.5, help="seconds to sleep before listening")
    parser.add_argument("--work", type=float, default=0.0, help="seconds each request takes")
    parser.add_argument("--name", default="", help="a name every answer carries (e.g. a canary's version)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(args.startup_delay)
    server = _Server((args.host, args.port), _Handler)
    server.work_seconds = args.work  # type: ignore[attr-defined]
    server.app_name = args.name  # type: ignore[attr-defined]
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
