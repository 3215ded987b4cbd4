"""The admin status page in a real browser: Debian's chromium, headless, against a real zerohop behind a real
Envoy. The page is read back from the DOM chromium dumps after it polled `/status` a few times, and from a
screenshot decoded here (zlib and PNG chunks, standard library only).

chromium is installed by `make tools` (Debian package, apt-get); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from extproc.observability import statuspage
from tests.helpers import wait_for
from tests.integration.stack import Stack, app, httpso, never_ready

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Virtual time runs ahead whenever the page is idle and stops while a fetch is pending, so this is ~5 polls
# of one virtual second each, in well under a second of real time once the page has loaded.
POLLING = "--virtual-time-budget=5000"
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 300, 40, 2
PAGE_BACKGROUND = bytes.fromhex("f6f7f9")

CONFIG = httpso("shop") + app("shop", startup_delay=0.3) + httpso("never") + never_ready("never")


# --- running chromium ---------------------------------------------------------------------------------------


def chromium_binary() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make tools` as root (apt-get install chromium) to run these tests")
    return CHROMIUM


async def chromium(workdir: Path, *args: str, timeout: float = 30.0) -> str:
    """Run headless chromium with a fresh profile; its stdout (the DOM with --dump-dom)."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir)
    process = await asyncio.create_subprocess_exec(
        str(chromium_binary()),
        *FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"chromium {' '.join(args)} did not finish within {timeout}s") from None
    assert process.returncode == 0, f"chromium exited {process.returncode}: {err.decode(errors='replace')[-2000:]}"
    return out.decode()


# --- reading the rendered DOM -------------------------------------------------------------------------------


@dataclass
class Chart:
    points: int
    max: float
    d: str = ""

    def coordinates(self) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", self.d)]


@dataclass
class Card:
    state: str
    fields: dict[str, str] = field(default_factory=dict)
    charts: dict[str, Chart] = field(default_factory=dict)


class RenderedPage(HTMLParser):
    """The cards (`section.card[data-target]`), their `[data-field]` texts and charts, and the connection state."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cards: dict[str, Card] = {}
        self.body_state = ""
        self.texts: dict[str, str] = {}
        self._card: Card | None = None
        self._chart: Chart | None = None
        self._text_into: tuple[dict[str, str], str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body_state = a.get("data-state", "")
        elif a.get("id") in ("connection", "page-info"):
            self._text_into = (self.texts, a["id"])
        elif tag == "section" and "data-target" in a:
            self._card = self.cards[a["data-target"]] = Card(a.get("data-state", ""))
        elif self._card is not None and "data-field" in a:
            self._text_into = (self._card.fields, a["data-field"])
            self._card.fields[a["data-field"]] = ""
        elif self._card is not None and tag == "svg":
            self._chart = self._card.charts[a["data-series"]] = Chart(int(a["data-points"]), float(a["data-max"]))
        elif self._chart is not None and tag == "path" and a.get("class") == "line":
            self._chart.d = a["d"]

    def handle_data(self, data: str) -> None:
        if self._text_into is not None:
            target, key = self._text_into
            target[key] = target.get(key, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("dd", "span"):
            self._text_into = None
        elif tag == "svg":
            self._chart = None
        elif tag == "section":
            self._card = None


def check_chart(chart: Chart, last_value: float) -> None:
    """At least 2 points, left to right inside the viewBox, the newest at the right edge drawn at `last_value`."""
    points = chart.coordinates()
    assert len(points) == chart.points >= 2, chart
    xs = [x for x, _ in points]
    assert xs == sorted(set(xs)), chart
    assert xs[0] >= 0, chart
    assert xs[-1] == CHART_WIDTH, chart
    assert all(0 <= y <= CHART_HEIGHT for _, y in points), chart
    expected_y = CHART_HEIGHT - CHART_PAD - last_value / chart.max * (CHART_HEIGHT - 2 * CHART_PAD)
    assert abs(points[-1][1] - expected_y) <= 0.05, (chart, last_value)


# --- reading the screenshot ---------------------------------------------------------------------------------


def png_rows(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and unfiltered rows of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks: dict[bytes, bytes] = {}
    position = 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunks[kind] = chunks.get(kind, b"") + data[position + 8 : position + 8 + length]
        position += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, color, interlace) in ((8, 2, 0), (8, 6, 0)), f"unexpected PNG format {depth=} {color=}"
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * bpp
    # Adding two rows bytewise without carries between bytes, on whole rows as integers: fast "Up" rows.
    low, high = int.from_bytes(b"\x7f" * stride, "big"), int.from_bytes(b"\x80" * stride, "big")
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        if kind == 0:
            row = line
        elif kind == 2:
            a, b = int.from_bytes(line, "big"), int.from_bytes(previous, "big")
            row = (((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(stride, "big")
        else:
            out = bytearray(line)
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                up = previous[i]
                if kind == 1:
                    predicted = left
                elif kind == 3:
                    predicted = (left + up) >> 1
                else:
                    predicted = _paeth(left, up, previous[i - bpp] if i >= bpp else 0)
                out[i] = (out[i] + predicted) & 0xFF
            row = bytes(out)
        rows.append(row)
        previous = row
    return width, height, bpp, rows


def _paeth(left: int, up: int, corner: int) -> int:
    guess = left + up - corner
    to_left, to_up, to_corner = abs(guess - left), abs(guess - up), abs(guess - corner)
    if to_left <= to_up and to_left <= to_corner:
        return left
    return up if to_up <= to_corner else corner


# --- the tests ----------------------------------------------------------------------------------------------


def targets_page(targets: list[dict[str, Any]], offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """What `/status/targets` answers for these targets (a stand-in server's)."""
    return {"total": len(targets), "offset": offset, "limit": limit, "targets": targets[offset : offset + limit]}


async def status(stack: Stack) -> dict[str, Any]:
    assert stack.session is not None
    async with stack.session.get(f"http://127.0.0.1:{stack.server.admin_port}/status") as response:
        document: dict[str, Any] = await response.json()
    return {target["name"]: target for target in document["targets"]}


@pytest.mark.envoy
async def test_status_page_in_chromium_shows_every_target_with_numbers_and_charts(tmp_path: Path) -> None:
    chromium_binary()
    async with Stack(tmp_path, CONFIG) as stack:
        for _ in range(5):
            assert (await stack.get("shop.test")).status == 200
        held = asyncio.create_task(stack.get("never.test"))
        try:
            await wait_for(lambda: stack.server.core.cold_gate.held_total == 1, 5.0, what="one request held")
            before = await status(stack)
            admin = f"http://127.0.0.1:{stack.server.admin_port}"
            screenshot = tmp_path / "status.png"
            dom, _ = await asyncio.gather(
                chromium(tmp_path, POLLING, "--dump-dom", f"{admin}/"),
                chromium(tmp_path, POLLING, f"--screenshot={screenshot}", "--window-size=1280,900", f"{admin}/ui"),
            )
            after = await status(stack)
        finally:
            held.cancel()

    page = RenderedPage(dom)
    assert (page.body_state, page.texts["connection"]) == ("live", "live")
    assert sorted(page.cards) == ["default/never", "default/shop"]

    shop = page.cards["default/shop"]
    assert shop.state == "warm"
    fields = {k: v for k, v in shop.fields.items() if k not in ("rate", "lastColdStart", "metricValue")}
    assert fields == {"replicas": "1/1", "routable": "yes", "inFlight": "0", "held": "0", "requests": "5"} | {
        "coldStarts": "1"
    }
    rate = float(shop.fields["rate"])
    # The windowed rate only falls while no request arrives; the page showed it somewhere in between.
    assert after["default/shop"]["rate"] <= rate <= before["default/shop"]["rate"], (rate, before, after)
    took_ms = round(before["default/shop"]["lastColdStartSeconds"] * 1000)
    expected_took = f"{took_ms}ms" if took_ms < 1000 else r"\d+(\.\d)?s"
    assert re.fullmatch(rf"\d+s ago, took {expected_took}", shop.fields["lastColdStart"]), shop.fields
    check_chart(shop.charts["rate"], rate)
    check_chart(shop.charts["inFlight"], 0)
    check_chart(shop.charts["ready"], 1)

    never = page.cards["default/never"]
    assert never.state == "starting"
    assert {k: never.fields[k] for k in ("replicas", "routable", "inFlight", "held", "requests")} == {
        "replicas": "0/1",
        "routable": "no",
        "inFlight": "1",
        "held": "1",
        "requests": "1",
    }
    assert re.fullmatch(r"\d+s ago", never.fields["lastColdStart"]), never.fields
    check_chart(never.charts["inFlight"], 1)
    check_chart(never.charts["ready"], 0)

    width, height, bpp, rows = png_rows(screenshot.read_bytes())
    assert (width, height) == (1280, 900)
    assert rows[-1][-bpp:][:3] == PAGE_BACKGROUND, "the page's background is not in the bottom-right corner"
    luminance = [sum(row[i : i + 3]) for row in rows[::3] for i in range(0, len(row), 3 * bpp)]
    assert statistics.pvariance(luminance) > 100, "the screenshot is (nearly) blank"
    colors = {row[i : i + 3] for row in rows[::3] for i in range(0, len(row), bpp)}
    assert len(colors) > 50, f"only {len(colors)} colors: nothing much was drawn"


async def test_status_page_keeps_the_last_data_marked_stale_when_status_fails(tmp_path: Path) -> None:
    """Two answers, then 503s: the card stays with its numbers, the page says it is stale. Nothing but the page,
    `/status` and `/status/targets` is ever requested."""
    chromium_binary()
    document = {
        "version": "9.9.9",
        "targets": [
            {"name": "shop/cart", "routable": True, "replicas": {"desired": 2, "ready": 2}, "inFlight": 3}
            | {"held": 0, "requests": 40, "rate": 4.5, "coldStarts": 0, "lastColdStart": None}
        ],
        "heldTotal": 0,
        "extProc": {"streams": 40, "unmatched": 0},
        "provider": {"provider": "local"},
    }
    requested: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        requested.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response

    async def answer(request: web.Request) -> web.Response:
        if requested.count(request.path) > 2:
            raise web.HTTPServiceUnavailable()
        return web.json_response(document if request.path == "/status" else targets_page(document["targets"]))

    application = web.Application(middlewares=[record])
    statuspage.add_routes(application)
    application.router.add_get("/status", answer)
    application.router.add_get("/status/targets", answer)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        dom = await chromium(tmp_path, POLLING, "--dump-dom", f"http://127.0.0.1:{port}/")
    finally:
        await runner.cleanup()

    page = RenderedPage(dom)
    assert page.body_state == "stale"
    connection = page.texts["connection"]
    assert re.fullmatch(r"unreachable \(HTTP 503\), showing data from \d\d:\d\d:\d\d", connection), connection
    card = page.cards["shop/cart"]
    assert (card.fields["replicas"], card.fields["inFlight"], card.fields["rate"]) == ("2/2", "3", "4.5")
    assert card.charts["rate"].points == 2
    assert set(requested) == {"/", "/status", "/status/targets"}
    assert requested.count("/status") >= 4
    assert requested.count("/status/targets") >= 4


async def test_status_page_shows_configuration_problems(tmp_path: Path) -> None:
    """A failed reload and a rejected document are listed above the cards, with file, document and message."""
    chromium_binary()
    document = {
        "version": "9.9.9",
        "targets": [],
        "heldTotal": 0,
        "extProc": {"streams": 0, "unmatched": 0},
        "provider": {
            "provider": "local",
            "reload": {"success": False, "lastSuccess": None, "error": {"message": "z.yaml: not valid YAML"}},
            "problems": [
                {"file": "z.yaml", "document": 2, "kind": "HTTPScaledObject", "name": "b", "severity": "error"}
                | {"message": "spec.host: unknown field; did you mean hosts?", "since": None}
            ],
        },
    }

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(document if request.path == "/status" else targets_page([]))

    application = web.Application()
    statuspage.add_routes(application)
    application.router.add_get("/status", answer)
    application.router.add_get("/status/targets", answer)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        dom = await chromium(tmp_path, POLLING, "--dump-dom", f"http://127.0.0.1:{port}/")
    finally:
        await runner.cleanup()

    section = re.search(r'<section id="problems"([^>]*)>(.*?)</section>', dom, re.DOTALL)
    assert section is not None
    assert "hidden" not in section.group(1)
    items = re.findall(r'<li data-problem="([^"]+)">([^<]*)</li>', section.group(2))
    assert items == [
        ("reload", "config reload failed, the previous config stays: z.yaml: not valid YAML"),
        ("error", "z.yaml: document 2 (HTTPScaledObject b): spec.host: unknown field; did you mean hosts?"),
    ]


async def test_status_page_shows_one_page_of_the_filtered_targets(tmp_path: Path) -> None:
    """120 targets: the page asks the server for the first 50 matching the filter in the URL (`#q=`), shows
    them with "1-50 of N", and never asks for the whole document."""
    chromium_binary()
    every = [
        {"name": f"shop/app-{index:03}", "routable": True, "replicas": {"desired": 1, "ready": 1}, "inFlight": 0}
        | {"held": 0, "requests": index, "rate": 0, "coldStarts": 0, "lastColdStart": None, "hosts": []}
        for index in range(120)
    ]
    summary = {"version": "9.9.9", "targetCount": 120, "heldTotal": 0, "provider": {"provider": "local"}}
    asked: list[dict[str, str]] = []

    async def answer_summary(request: web.Request) -> web.Response:
        assert request.query.get("summary") == "1", "the page fetched the whole status document"
        return web.json_response(summary)

    async def answer_targets(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        query = request.query.get("q", "")
        matching = [target for target in every if query in target["name"]]
        return web.json_response(targets_page(matching, int(request.query["offset"]), int(request.query["limit"])))

    application = web.Application()
    statuspage.add_routes(application)
    application.router.add_get("/status", answer_summary)
    application.router.add_get("/status/targets", answer_targets)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        everything, filtered = await asyncio.gather(
            chromium(tmp_path, POLLING, "--dump-dom", f"http://127.0.0.1:{port}/"),
            chromium(tmp_path, POLLING, "--dump-dom", f"http://127.0.0.1:{port}/#q=app-1"),
        )
    finally:
        await runner.cleanup()

    first = RenderedPage(everything)
    assert sorted(first.cards) == [f"shop/app-{index:03}" for index in range(50)]
    assert first.texts["page-info"] == "1-50 of 120"
    narrowed = RenderedPage(filtered)
    matching = [f"shop/app-{index:03}" for index in range(100, 120)]
    assert sorted(narrowed.cards) == matching
    assert narrowed.texts["page-info"] == "1-20 of 20 matching \u201capp-1\u201d (120 targets)"
    assert {"offset": "0", "limit": "50", "q": "app-1"} in asked
    assert {"offset": "0", "limit": "50"} in asked


def test_the_page_is_self_contained() -> None:
    """No scripts, styles, fonts or images from anywhere: no URL with a scheme or a host, and a CSP that says so."""
    html = statuspage.PAGE
    assert not re.search(r"https?:", html, re.IGNORECASE)
    assert not re.search(r"(?:src|href|action)\s*=\s*[\"']?(?!data:)[^\"'\s>]", html), "a src/href that is not data:"
    assert "@import" not in html
    assert "url(" not in html
    assert "default-src 'none'" in html
    assert "connect-src 'self'" in html
    assert re.findall(r"fetch\(([^,)]+)", html) == ["url"], "the page fetches other than through getJSON"
    urls = re.findall(r"getJSON\((\"[^,)]+)", html)
    assert urls == ['"status?summary=1"', '"status/targets?" + params'], "the page fetches anything but relative status"
