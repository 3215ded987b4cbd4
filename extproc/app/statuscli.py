"""`zerohop status`: one table row per target, read from a running zerohop's admin `/status`.

`render` is pure (a status document and the wall-clock time in, text out); `main` fetches, prints, and with
`--watch` repeats until Ctrl-C. Only the standard library is used, so the command starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

DEFAULT_ADMIN_URL = "http://127.0.0.1:9091"
ADMIN_URL_ENV = "ZEROHOP_ADMIN_URL"
ADMIN_ADDRESS_ENV = "ZEROHOP_ADMIN_ADDRESS"  # what `zerohop serve` listens on (settings.admin_address)
DEFAULT_WATCH_SECONDS = 2.0
FETCH_TIMEOUT_SECONDS = 3.0
# Cursor home, then clear to the end of the screen: redraws in place without a blank flash.
_REDRAW = "\x1b[H\x1b[J"

COLUMNS = (
    "TARGET",
    "REPLICAS",
    "ROUTABLE",
    "IN-FLIGHT",
    "RATE",
    "HELD",
    "COLD STARTS",
    "LAST COLD START",
    "TOOK",
)

DESCRIPTION = f"""\
Print the targets of a running zerohop, read from its admin server's /status: replicas (ready/desired),
whether the gateway can route to them, requests in flight and held, the request rate, cold starts, and when
the last one happened and how long it held requests.

The admin URL is --admin, else ${ADMIN_URL_ENV}, else {DEFAULT_ADMIN_URL} (the default of
`zerohop serve --admin-address`, ${ADMIN_ADDRESS_ENV}); a bare PORT means 127.0.0.1:PORT. Exit status 1
when the admin server cannot be read; when nothing answers, the error says where to look. The same numbers,
with charts of the last hour, are on the status page: open the admin URL in a browser.
"""

EPILOG = """\
examples:
  zerohop status
  zerohop status --watch                       # redraw every 2s until Ctrl-C
  zerohop status --json | jq '.targets[].name'
  kubectl -n zerohop-system port-forward deploy/zerohop 9091:9091 &  zerohop status --watch 5
"""


class StatusError(Exception):
    """The admin server could not be read, or what it answered is not a zerohop status document;
    `unreachable` when nothing answered at all (so the user is told where zerohop's admin server is)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def admin_url(given: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The base admin URL: `given`, else the environment, else the default; a bare HOST:PORT gets http://,
    a bare PORT (or :PORT) means 127.0.0.1:PORT."""
    url = (given or environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL).strip().rstrip("/")
    url = url.removesuffix("/status")
    if url.removeprefix(":").isdigit():
        url = f"127.0.0.1:{url.removeprefix(':')}"
    return url if "://" in url else f"http://{url}"


def fetch(url: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> dict[str, Any]:
    """GET `url`/status and return the document; every failure is a StatusError with a one-line reason."""
    status_url = f"{url}/status"
    try:
        with urllib.request.urlopen(status_url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise StatusError(f"{status_url} answered HTTP {exc.code} {exc.reason}") from None
        raise _not_zerohop(status_url, f"answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise StatusError(f"cannot reach {status_url}: {reason}", unreachable=True) from None
    except TimeoutError:
        raise StatusError(f"cannot reach {status_url}: no answer within {timeout:g}s", unreachable=True) from None
    except http.client.HTTPException as exc:
        raise _not_zerohop(status_url, f"did not answer HTTP/1.1 ({type(exc).__name__})") from None
    except (ValueError, OSError) as exc:
        raise StatusError(f"cannot read {status_url}: {exc}") from None
    try:
        document = json.loads(body)
    except ValueError:
        raise _not_zerohop(status_url, "did not answer JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("targets"), list):
        raise _not_zerohop(status_url, "has no list of targets")
    return document


def where_to_look(given: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """What to try when nothing answers: where the URL came from, which setting moves zerohop's admin server,
    and how to point this command elsewhere."""
    if given:
        source = "--admin"
    elif environ.get(ADMIN_URL_ENV):
        source = f"${ADMIN_URL_ENV}"
    else:
        source = f"the default (no --admin, no ${ADMIN_URL_ENV})"
    address = DEFAULT_ADMIN_URL.removeprefix("http://")
    return (
        f"  The URL came from {source}. Is zerohop running?\n"
        f"  `zerohop serve` listens for admin on --admin-address (${ADMIN_ADDRESS_ENV}), {address} by default;\n"
        "  its log says where: `zerohop ready: ... admin :PORT`.\n"
        f"  Point this command there with --admin PORT (or HOST:PORT, or a URL) or ${ADMIN_URL_ENV}.\n"
        "  On Kubernetes: kubectl -n zerohop-system port-forward deploy/zerohop 9091:9091\n"
    )


def _not_zerohop(status_url: str, what: str) -> StatusError:
    return StatusError(f"{status_url} {what}: not a zerohop admin URL?")


# --- formatting ---------------------------------------------------------------------------------------------


def number(value: float | None) -> str:
    """At most 3 decimals, no trailing zeros: 2.5, 12, 0.333; `-` for unknown."""
    if value is None:
        return "-"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def took(seconds: float) -> str:
    """A duration: 612ms, 4.2s, 2m05s."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def ago(seconds: float) -> str:
    """How long ago, in its largest whole unit: 12s ago, 3m ago, 5h ago, 2d ago."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _since(iso: str | None, now: datetime.datetime) -> str:
    if not iso:
        return "-"
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return ago((now - moment).total_seconds())


def row(target: Mapping[str, Any], now: datetime.datetime) -> tuple[str, ...]:
    replicas = target.get("replicas")
    last_took = target.get("lastColdStartSeconds")
    return (
        str(target.get("name", "?")),
        f"{replicas['ready']}/{replicas['desired']}" if isinstance(replicas, dict) else "-",
        "yes" if target.get("routable") else "no",
        number(target.get("inFlight")),
        number(target.get("rate")),
        number(target.get("held")),
        number(target.get("coldStarts")),
        _since(target.get("lastColdStart"), now),
        took(last_took) if last_took is not None else "-",
    )


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns three spaces apart, as kubectl prints them."""
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(rows[0]))]
    return ["   ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip() for cells in rows]


def footer(document: Mapping[str, Any]) -> str:
    """Held total, ext_proc counters, the provider (and the leader on Kubernetes), and peers if any."""
    parts = ["DRAINING"] if document.get("draining") else []
    parts.append(f"held {document.get('heldTotal', 0)}")
    ext_proc = document.get("extProc") or {}
    parts.append(f"ext_proc streams {ext_proc.get('streams', 0)}, unmatched {ext_proc.get('unmatched', 0)}")
    provider = document.get("provider") or {}
    kind = provider.get("provider")
    if kind == "kubernetes":
        leader = f"{provider.get('identity')} (this replica)" if provider.get("leader") else provider.get("leaseHolder")
        parts.append(f"provider kubernetes, leader {leader or 'none'}")
    elif kind:
        parts.append(f"provider {kind}")
    peers = document.get("peers") or {}
    if peers.get("peers"):
        parts.append(f"peers {peers.get('answered', 0)}/{len(peers['peers'])} answered")
    return "; ".join(parts)


def problems(document: Mapping[str, Any], now: datetime.datetime) -> list[str]:
    """One `!` line per configuration problem: a failed reload (the previous config stays), each rejected or
    questionable document with its file, index, kind and name, and since when."""
    provider = document.get("provider") or {}
    lines: list[str] = []
    reload = provider.get("reload") or {}
    error = reload.get("error")
    if isinstance(error, Mapping):
        last = reload.get("lastSuccess")
        good = f"; last applied {_since(last, now)}" if last else ""
        lines.append(
            f"! config reload failed, the previous config stays: {error.get('message')} "
            f"(since {_since(error.get('since'), now)}{good})"
        )
    for problem in provider.get("problems") or []:
        where = f"{problem['file']}: " if problem.get("file") else ""
        if problem.get("document"):
            where += f"document {problem['document']} "
        if problem.get("kind") or problem.get("name"):
            where += f"({problem.get('kind') or '?'} {problem.get('name') or '?'}) "
        since = f" (since {_since(problem.get('since'), now)})" if problem.get("since") else ""
        mark = "!" if problem.get("severity", "error") == "error" else "~"
        lines.append(f"{mark} {where.strip()}: {problem.get('message')}{since}")
    return lines


def render(document: Mapping[str, Any], now: datetime.datetime) -> str:
    """The table of targets, configuration problems and the footer line; `now` (timezone-aware) dates the
    last cold starts and the problems."""
    targets = document.get("targets") or []
    lines = table([COLUMNS, *(row(t, now) for t in targets)]) if targets else ["no targets"]
    found = problems(document, now)
    if found:
        lines += ["", *found]
    lines += ["", footer(document)]
    return "\n".join(lines) + "\n"


# --- command ------------------------------------------------------------------------------------------------


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin",
        metavar="PORT|URL",
        help=f"zerohop's admin URL (default ${ADMIN_URL_ENV}, else {DEFAULT_ADMIN_URL}); HOST:PORT or PORT is enough",
    )
    parser.add_argument(
        "--watch",
        nargs="?",
        const=DEFAULT_WATCH_SECONDS,
        type=positive_seconds,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C",
    )
    parser.add_argument("--json", action="store_true", help="print the raw /status document (JSON)")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _text(document: Mapping[str, Any], as_json: bool) -> str:
    return json.dumps(document, indent=2) + "\n" if as_json else render(document, _now())


def _watch(url: str, interval: float, as_json: bool, out: TextIO, err: TextIO) -> None:
    """Redraw until Ctrl-C. A first failed read raises; later ones keep showing the last document, marked stale.

    On a terminal the screen is redrawn in place; otherwise successive tables are printed, or with --json one
    document per line (JSON Lines, problems on stderr) for scripts.
    """
    tty = out.isatty()
    json_lines = as_json and not tty
    last: dict[str, Any] | None = None
    last_at = ""
    while True:
        try:
            last, problem = fetch(url), ""
            last_at = _now().astimezone().strftime("%H:%M:%S")
        except StatusError as exc:
            if last is None:
                raise
            problem = f"{exc}; showing data from {last_at}"
        if json_lines:
            if problem:
                err.write(f"zerohop status: {problem}\n")
            else:
                out.write(json.dumps(last) + "\n")
        else:
            heading = f"zerohop {last.get('version', '?')} at {url}, every {interval:g}s, {last_at}\n"
            screen = heading + (f"! {problem}\n" if problem else "") + "\n" + _text(last, as_json)
            out.write(_REDRAW + screen if tty else screen + "\n")
        out.flush()
        time.sleep(interval)


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `zerohop status` with parsed arguments: 0 when the status was shown, 1 when it could not be read."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    url = admin_url(args.admin)
    try:
        if args.watch is None:
            out.write(_text(fetch(url), args.json))
        else:
            with contextlib.suppress(KeyboardInterrupt):
                _watch(url, args.watch, args.json, out, err)
    except StatusError as exc:
        err.write(f"zerohop status: {exc}\n")
        if exc.unreachable:
            err.write(where_to_look(args.admin))
        return 1
    return 0
