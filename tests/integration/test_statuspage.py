"""The admin status page in a real browser: Debian's chromium, headless, against a real zerohop behind a real
Envoy. The page is read back from the DOM chromium dumps after it polled `/status` a few times, and from a
screenshot decoded here (zlib and PNG chunks, standard library only).

chromium is installed by `make tools` (Debian package, apt-get); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
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
# One poll: the first fetch at load, the next one a virtual second later.
ONE_POLL = "--virtual-time-budget=500"
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 100, 4
PAGE_BACKGROUND = bytes.fromhex("f6f7f9")
# Colours as the screenshot shows them: the ready line (solid), a cold start's band (22% violet over the card's
# white), the rate line, and a canary group's background.
READY = (0x1F, 0x8A, 0x4C)
COLD_BAND = (226, 212, 251)
RATE = (0x2F, 0x6F, 0xDB)
GROUP_BACKGROUND = (0xEE, 0xF2, 0xFB)

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
    rows: int
    max: float
    span: int
    end: int | None
    lines: dict[str, str] = field(default_factory=dict)
    cold: list[tuple[float, float | None]] = field(default_factory=list)

    def steps(self, key: str) -> list[tuple[float, float, float]]:
        """The step function of `path.line[data-key=key]` as (x from, x to, y) segments."""
        segments: list[tuple[float, float, float]] = []
        x = y = 0.0
        for command, a, b in re.findall(r"([MHV])(-?[\d.]+)(?:,(-?[\d.]+))?", self.lines[key]):
            if command == "M":
                x, y = float(a), float(b)
            elif command == "V":
                y = float(a)
            else:
                segments.append((x, float(a), y))
                x = float(a)
        return segments

    def values(self, key: str) -> list[float]:
        """The values drawn, left to right (consecutive repeats merged), from the y of each step."""
        drawn: list[float] = []
        for _, _, y in self.steps(key):
            value = round((CHART_HEIGHT - CHART_PAD - y) / (CHART_HEIGHT - 2 * CHART_PAD) * self.max, 1)
            if not drawn or drawn[-1] != value:
                drawn.append(value)
        return drawn


@dataclass
class Card:
    state: str
    group: str | None
    fields: dict[str, str] = field(default_factory=dict)
    charts: dict[str, Chart] = field(default_factory=dict)
    ticks: list[tuple[int, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


class RenderedPage(HTMLParser):
    """The cards (`section.card[data-target]`) with their `[data-field]` texts, charts, time axis and cold-start
    labels, the canary group each is in (`section.group[data-host]`), and the connection state."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cards: dict[str, Card] = {}
        self.body_state = ""
        self.texts: dict[str, str] = {}
        self._group: str | None = None
        self._card: Card | None = None
        self._chart: Chart | None = None
        self._text_into: tuple[dict[str, str], str] | None = None
        self._tick: int | None = None
        self._label = False
        self._template = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "template" or self._template:
            self._template = True  # the page's templates, not what it shows
        elif tag == "body":
            self.body_state = a.get("data-state", "")
        elif a.get("id") in ("connection", "page-info", "history-info"):
            self._text_into = (self.texts, a["id"])
        elif tag == "section" and "group" in classes:
            self._group = a["data-host"]
        elif tag == "section" and "data-target" in a:
            self._card = self.cards[a["data-target"]] = Card(a.get("data-state", ""), self._group)
        elif self._card is not None and "data-field" in a:
            self._text_into = (self._card.fields, a["data-field"])
            self._card.fields[a["data-field"]] = ""
        elif self._card is not None and tag == "svg":
            end = a.get("data-end", "")
            self._chart = self._card.charts[a["data-series"]] = Chart(
                int(a["data-rows"]), float(a["data-max"]), int(a["data-span"]), int(end) if end else None
            )
        elif self._chart is not None and tag == "path" and "line" in classes:
            self._chart.lines[a["data-key"]] = a["d"]
        elif self._chart is not None and tag == "rect" and "cold" in classes:
            seconds = a["data-seconds"]
            self._chart.cold.append((float(a["data-start"]), float(seconds) if seconds else None))
        elif self._card is not None and "tick" in classes:
            self._tick = int(a["data-t"])
        elif self._card is not None and "cold-label" in classes:
            self._label = True

    def handle_data(self, data: str) -> None:
        if self._text_into is not None:
            target, key = self._text_into
            target[key] = target.get(key, "") + data
        elif self._card is not None and self._tick is not None:
            self._card.ticks.append((self._tick, data))
            self._tick = None
        elif self._card is not None and self._label:
            self._card.labels.append(data)
            self._label = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._template = False
        if tag in ("dd", "span", "p"):
            self._text_into = None
        if tag == "svg":
            self._chart = None
        elif tag == "section":
            if self._card is not None:
                self._card = None
            else:
                self._group = None


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


def count_near(rows: list[bytes], bpp: int, color: tuple[int, int, int], tolerance: int = 8) -> int:
    """Pixels within `tolerance` of `color` in each channel."""
    red, green, blue = color
    count = 0
    for row in rows:
        for i in range(0, len(row), bpp):
            if abs(row[i] - red) <= tolerance and abs(row[i + 1] - green) <= tolerance:
                count += abs(row[i + 2] - blue) <= tolerance
    return count


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


async def sampled_twice(stack: Stack) -> None:
    """Wait until the server's history has finished two passes after now (so it holds what just happened)."""
    history = stack.server.history
    assert history is not None
    since = history.tick
    await wait_for(lambda: history.done >= since + 2, 5.0, what="two history passes")


def check_axis(card: Card) -> None:
    """Time labels (HH:MM, or HH:MM:SS below a minute a step) at whole steps, left to right, within the span."""
    chart = card.charts["replicas"]
    assert chart.end is not None
    ticks = [t for t, _ in card.ticks]
    assert len(ticks) >= 3, card.ticks
    step = ticks[1] - ticks[0]
    assert step in (10, 15, 30, 60, 120, 300, 600), card.ticks
    assert ticks == list(range(ticks[0], ticks[-1] + 1, step)), card.ticks
    assert all(t % step == 0 for t in ticks), card.ticks
    assert chart.end - chart.span < ticks[0], (card.ticks, chart.end)
    assert ticks[-1] <= chart.end, (card.ticks, chart.end)
    for t, text in card.ticks:
        assert text == time.strftime("%H:%M:%S" if step < 60 else "%H:%M", time.localtime(t)), (t, text)


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
            await sampled_twice(stack)
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
    fields = {k: v for k, v in shop.fields.items() if k not in ("rate", "lastColdStart", "metricValue", "hosts")}
    assert fields == {"replicas": "1/1", "routable": "yes", "inFlight": "0", "held": "0", "requests": "5"} | {
        "coldStarts": "1"
    }
    rate = float(shop.fields["rate"])
    # The windowed rate only falls while no request arrives; the page showed it somewhere in between.
    assert after["default/shop"]["rate"] <= rate <= before["default/shop"]["rate"], (rate, before, after)
    took_ms = round(before["default/shop"]["lastColdStartSeconds"] * 1000)
    expected_took = f"{took_ms}ms" if took_ms < 1000 else r"\d+(\.\d)?s"
    assert re.fullmatch(rf"\d+s ago, took {expected_took}", shop.fields["lastColdStart"]), shop.fields
    assert shop.fields["hosts"] == "shop.test"
    replicas = shop.charts["replicas"]
    assert replicas.values("ready")[-1] == 1
    assert replicas.values("desired")[-1] == 1
    assert replicas.steps("ready")[-1][1] == CHART_WIDTH, "the last value is not drawn up to the right edge"
    assert shop.charts["inFlight"].values("inFlight")[-1] == 0
    assert shop.charts["rate"].values("rate")[-1] > 0
    [(start, took)] = replicas.cold
    assert took == before["default/shop"]["lastColdStartSeconds"]
    assert abs(start - datetime.fromisoformat(before["default/shop"]["lastColdStart"]).timestamp()) < 0.002
    check_axis(shop)

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
    assert never.charts["inFlight"].values("inFlight")[-1] == 1
    assert never.charts["inFlight"].values("held")[-1] == 1
    assert never.charts["replicas"].values("ready")[-1] == 0
    assert never.charts["replicas"].values("desired")[-1] == 1
    [(_, still_cold)] = never.charts["replicas"].cold
    assert still_cold is None
    assert never.group is None
    assert shop.group is None

    width, height, bpp, rows = png_rows(screenshot.read_bytes())
    assert (width, height) == (1280, 900)
    assert rows[-1][-bpp:][:3] == PAGE_BACKGROUND, "the page's background is not in the bottom-right corner"
    luminance = [sum(row[i : i + 3]) for row in rows[::3] for i in range(0, len(row), 3 * bpp)]
    assert statistics.pvariance(luminance) > 100, "the screenshot is (nearly) blank"
    colors = {row[i : i + 3] for row in rows[::3] for i in range(0, len(row), bpp)}
    assert len(colors) > 50, f"only {len(colors)} colors: nothing much was drawn"
    assert count_near(rows, bpp, READY) > 300, "no ready-replicas line to be seen"
    assert count_near(rows, bpp, COLD_BAND) > 300, "no cold-start band to be seen"


async def test_status_page_keeps_the_last_data_marked_stale_when_status_fails(tmp_path: Path) -> None:
    """Two answers, then 503s: the card stays with its numbers, the page says it is stale. Nothing but the page,
    `/status`, `/status/targets` and `/status/history` is ever requested."""
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
    # This server keeps no history (404): the cards say so instead of drawing charts of their own.
    assert card.charts["rate"].rows == 0
    assert card.fields.get("hosts") == "no hosts"
    assert page.texts["history-info"] == "history off on the server"
    assert set(requested) == {"/", "/status", "/status/targets", "/status/history"}
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
    urls = re.findall(r"getJSON\(([^,)]+)", html)
    assert urls == ["historyURL(fresh", "historyURL(known", "url", '"status?summary=1"', '"status/targets?" + params']
    assert 'return "status/history?" + params;' in html, "the page fetches anything but relative status"


@pytest.mark.envoy
async def test_the_charts_come_from_the_server_so_a_fresh_page_shows_the_past(tmp_path: Path) -> None:
    """A cold start happens with no page open; a page opened afterwards, and opened again (a reload, with a
    fresh browser profile), shows it from its first poll: ready 0 then 1, the cold start's band with its
    duration. The page polls once, so nothing it drew can come from samples of its own."""
    chromium_binary()
    async with Stack(tmp_path, CONFIG) as stack:
        assert (await stack.get("shop.test")).status == 200
        await sampled_twice(stack)
        before = (await status(stack))["default/shop"]
        admin = f"http://127.0.0.1:{stack.server.admin_port}/"
        first = await chromium(tmp_path, ONE_POLL, "--dump-dom", admin)
        await sampled_twice(stack)
        again = await chromium(tmp_path, ONE_POLL, "--dump-dom", admin)

    opened, reloaded = RenderedPage(first).cards["default/shop"], RenderedPage(again).cards["default/shop"]
    for card in (opened, reloaded):
        replicas = card.charts["replicas"]
        assert replicas.values("ready") == [0, 1], replicas
        assert replicas.values("desired") == [0, 1], replicas
        assert replicas.cold == [(pytest.approx(replicas.cold[0][0]), before["lastColdStartSeconds"])]
        assert card.charts["rate"].values("rate")[0] == 0
        assert card.charts["rate"].values("rate")[-1] > 0
        assert card.fields["coldStarts"] == "1"
    end_opened, end_reloaded = opened.charts["replicas"].end, reloaded.charts["replicas"].end
    assert end_opened is not None
    assert end_reloaded is not None
    assert end_reloaded >= end_opened + 2
    assert opened.charts["replicas"].cold == reloaded.charts["replicas"].cold


# --- a stand-in server with an hour of history --------------------------------------------------------------

CANARY_HOST = "backend.shop.test"


def track(rows: list[tuple[int, int, int, int, int, float]], cold: list[tuple[float, float]]) -> dict[str, Any]:
    """A `/status/history` body from (tick, ready, desired, in flight, held, rate) rows and cold starts."""
    ticks = [row[0] for row in rows]
    columns = list(zip(*(row[1:] for row in rows), strict=True))
    return {
        "t": [ticks[0]] + [b - a for a, b in itertools.pairwise(ticks)],
        "ready": list(columns[0]),
        "desired": list(columns[1]),
        "inFlight": list(columns[2]),
        "held": list(columns[3]),
        "rate": list(columns[4]),
        "coldStarts": [{"start": start, "seconds": seconds} for start, seconds in cold],
    }


def version_rows(end: int, share: float) -> list[tuple[int, int, int, int, int, float]]:
    """Cold until 700 s ago, woken (desired 1, 3 requests held), ready 3 s later; the busier one scales to 2
    replicas 400 s ago (desired 10 s before ready)."""
    rows = [(end - 3600, 0, 0, 0, 0, 0.0), (end - 700, 0, 1, 3, 3, 0.0), (end - 697, 1, 1, 2, 0, share)]
    for tick in range(end - 690, end + 1, 5):
        rate = round(share * (4 + min((tick - end + 697) / 60, 3) * 3 + (tick % 17) / 8), 3)
        desired = 2 if share > 0.5 and tick >= end - 400 else 1
        ready = 2 if share > 0.5 and tick >= end - 390 else 1
        rows.append((tick, ready, desired, int(rate / 3) % 5, 0, rate))
    return rows


def stand_in(end: int) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """A summary, three targets (two versions sharing a host, and one alone) and their history up to `end`."""
    summary = {"version": "9.9.9", "targetCount": 3, "heldTotal": 0, "provider": {"provider": "local"}}

    def target(name: str, hosts: list[str], rate: float, replicas: int, cold_starts: int) -> dict[str, Any]:
        return (
            {"name": name, "hosts": hosts, "routable": True, "replicas": {"desired": replicas, "ready": replicas}}
            | {"inFlight": 1, "held": 0, "requests": 1000, "rate": rate, "coldStarts": cold_starts}
            | {"lastColdStart": None, "metricValue": rate, "targetValue": 10}
        )

    targets = [
        target("shop/backend-v1", [CANARY_HOST], 8.0, 2, 1),
        target("shop/backend-v2", [CANARY_HOST], 2.0, 1, 1),
        target("shop/cart", ["cart.shop.test", "cart.internal"], 0.5, 1, 2),
    ]
    cart = [(end - 3600, 0, 0, 0, 0, 0.0), (end - 520, 0, 1, 2, 2, 0.0), (end - 518, 1, 1, 1, 0, 0.5)]
    cart += [(end - 300, 1, 1, 0, 0, 0.2), (end - 240, 0, 0, 0, 0, 0.0), (end - 120, 0, 1, 1, 1, 0.0)]
    cart += [(end - 119, 1, 1, 1, 0, 0.5)]
    history = {
        "shop/backend-v1": track(version_rows(end, 1.0), [(end - 699.7, 2.4)]),
        "shop/backend-v2": track(version_rows(end, 0.25), [(end - 699.5, 3.1)]),
        "shop/cart": track(cart, [(end - 519.8, 1.6), (end - 119.9, 0.9)]),
    }
    return summary, targets, history


async def serve_stand_in(end: int) -> tuple[web.AppRunner, int, list[dict[str, Any]]]:
    summary, targets, history = stand_in(end)
    asked: list[dict[str, Any]] = []

    async def answer_summary(_request: web.Request) -> web.Response:
        return web.json_response(summary)

    async def answer_targets(_request: web.Request) -> web.Response:
        return web.json_response(targets_page(targets))

    async def answer_history(request: web.Request) -> web.Response:
        names = request.query.getall("target", [])
        asked.append({"targets": names, "since": request.query.get("since")})
        return web.json_response({"now": end, "step": 1, "targets": {name: history.get(name) for name in names}})

    application = web.Application()
    statuspage.add_routes(application)
    application.router.add_get("/status", answer_summary)
    application.router.add_get("/status/targets", answer_targets)
    application.router.add_get("/status/history", answer_history)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1], asked


async def test_charts_show_a_time_axis_cold_starts_desired_vs_ready_hosts_and_canary_versions(tmp_path: Path) -> None:
    """An hour of history from a stand-in server: what a person sees on the page (DOM and screenshot)."""
    chromium_binary()
    end = int(time.time())
    runner, port, asked = await serve_stand_in(end)
    screenshot = tmp_path / "history.png"
    try:
        dom, hour, _ = await asyncio.gather(
            chromium(tmp_path, POLLING, "--dump-dom", f"http://127.0.0.1:{port}/"),
            chromium(tmp_path, POLLING, "--dump-dom", f"http://127.0.0.1:{port}/#span=3600"),
            chromium(
                tmp_path, POLLING, f"--screenshot={screenshot}", "--window-size=1280,1400", f"http://127.0.0.1:{port}/"
            ),
        )
    finally:
        await runner.cleanup()

    page = RenderedPage(dom)
    v1, v2, cart = (page.cards[name] for name in ("shop/backend-v1", "shop/backend-v2", "shop/cart"))
    # Canary: the two versions of one host are one group; the lone target is not in any.
    assert (v1.group, v2.group, cart.group) == (CANARY_HOST, CANARY_HOST, None)
    assert cart.fields["hosts"] == "cart.shop.test, cart.internal"
    assert v1.fields["hosts"] == CANARY_HOST
    # Versions side by side share their scales, so their charts compare at a glance.
    assert v1.charts["rate"].max == v2.charts["rate"].max == 20
    assert v1.charts["replicas"].max == v2.charts["replicas"].max == 2

    # Desired vs ready: both lines; desired steps up to 2 before ready does (10 s at 600 px per 900 s).
    replicas = v1.charts["replicas"]
    assert (replicas.span, replicas.end) == (900, end)
    assert replicas.values("ready") == [0, 1, 2]
    assert replicas.values("desired") == [0, 1, 2]
    up = {key: next(x0 for x0, _, y in replicas.steps(key) if y < 10) for key in ("ready", "desired")}
    assert up["ready"] - up["desired"] == pytest.approx(10 * CHART_WIDTH / 900, abs=0.15), up
    # Cold starts: a band per cold start in every chart, with its duration written next to the latest one.
    assert replicas.cold == [(end - 699.7, 2.4)]
    assert v1.charts["inFlight"].cold == replicas.cold
    assert v1.charts["inFlight"].values("held") == [0, 3, 0]
    assert cart.charts["replicas"].cold == [(end - 519.8, 1.6), (end - 119.9, 0.9)]
    assert cart.labels == ["cold start 900ms", "1.6s"]
    assert v1.labels == ["cold start 2.4s"]
    check_axis(v1)
    assert [t for t, _ in v1.ticks] == [t for t, _ in cart.ticks]
    # The whole hour on request: the first rows (an hour ago) drawn, the axis in 10-minute steps.
    whole = RenderedPage(hour).cards["shop/cart"]
    assert whole.charts["replicas"].span == 3600
    assert whole.charts["replicas"].steps("ready")[0][0] == 0
    assert whole.ticks[1][0] - whole.ticks[0][0] == 600
    # The whole hour once per target (by each of the three browsers), then only what is new.
    whole_hours = [sorted(entry["targets"]) for entry in asked if entry["since"] is None]
    assert whole_hours == [["shop/backend-v1", "shop/backend-v2", "shop/cart"]] * 3, asked
    assert {entry["since"] for entry in asked if entry["since"] is not None} == {str(end)}, asked
    assert len(asked) > 3, asked

    width, height, bpp, rows = png_rows(screenshot.read_bytes())
    assert (width, height) == (1280, 1400)
    assert count_near(rows, bpp, READY) > 1000, "no ready-replicas lines to be seen"
    assert count_near(rows, bpp, RATE) > 1000, "no request-rate lines to be seen"
    assert count_near(rows, bpp, COLD_BAND) > 1000, "no cold-start bands to be seen"
    assert count_near(rows, bpp, GROUP_BACKGROUND, 2) > 20000, "no canary group to be seen"
