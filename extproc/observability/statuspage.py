"""The status page of the admin port (`GET /` and `GET /ui`): one self-contained HTML document.

The page polls `status?summary=1` (the process, without targets) and one page of targets,
`status/targets?offset=&limit=50&q=` (both relative, so it also works behind `kubectl proxy` or a path
prefix), every second: a page of 50 cards costs the same with 10 targets or 10,000. It draws, per target in
view, the current numbers and inline-SVG line charts of the last five minutes. A search box (`#search`,
also `#q=...` in the URL) filters by name or host; `#prev` and `#next` page through. It loads
nothing else: no scripts, styles, fonts or images from anywhere, which its Content-Security-Policy enforces.
History lives in the browser only; the server keeps no samples for it.

Stable hooks for tests and scripts: each card is `section.card[data-target="ns/name"]` with
`[data-field=...]` values; each chart is `svg.chart[data-series=rate|inFlight|ready]` (viewBox 300x40) carrying
`data-points`, `data-max` and `data-span` (seconds drawn), and its `path.line` holds the points as
`Mx,yLx,y...`, the newest at x=300, with a new `M` where polling had a gap. Configuration problems (a failed
reload, rejected documents) are `#problems li[data-problem=reload|error|warning]`, shown above the cards;
`#page-info` says which targets are shown ("1-50 of 10000").
"""

from __future__ import annotations

from aiohttp import web

PATHS = ("/", "/ui")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:">
<link rel="icon" href="data:,">
<title>zerohop status</title>
<style>
:root { --bg: #f6f7f9; --card: #fff; --fg: #1d2330; --dim: #6b7385; --line: #d9dde5;
  --rate: #2f6fdb; --inFlight: #c2571a; --ready: #1f8a4c; --warn: #b42318; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171c; --card: #1d2129; --fg: #e6e9ef; --dim: #949bab; --line: #343a46;
    --rate: #6ea0ff; --inFlight: #f0924f; --ready: #4cc383; --warn: #ff6b5e; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 20px; background: var(--bg); color: var(--fg);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
body > header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 16px; margin-bottom: 4px; }
h1 { font-size: 20px; margin: 0; }
#version, #updated, #summary, .window { color: var(--dim); }
#summary { margin: 0 0 14px; }
#connection { font-weight: 600; }
#connection[data-state="live"] { color: var(--ready); }
#connection[data-state="stale"], #connection[data-state="down"] { color: var(--warn); }
#targets { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
body[data-state="stale"] .card { opacity: 0.55; }
.card > header { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; }
h2 { font-size: 15px; margin: 0; overflow-wrap: anywhere; }
.badge { font-size: 12px; padding: 1px 8px; border-radius: 10px; border: 1px solid currentColor; white-space: nowrap; }
.card[data-state="warm"] .badge { color: var(--ready); }
.card[data-state="cold"] .badge { color: var(--dim); }
.card[data-state="starting"] .badge { color: var(--warn); }
dl { display: grid; grid-template-columns: repeat(4, 1fr); gap: 6px 10px; margin: 10px 0; }
dl div.wide { grid-column: span 4; }
dt { font-size: 11px; color: var(--dim); text-transform: uppercase; letter-spacing: 0.03em; }
dd { margin: 0; font-variant-numeric: tabular-nums; font-weight: 600; }
dd[data-field="held"].busy { color: var(--warn); }
figure { margin: 6px 0 0; }
figcaption { display: flex; justify-content: space-between; font-size: 12px; color: var(--dim); }
svg.chart { display: block; width: 100%; height: 40px; border-bottom: 1px solid var(--line); }
svg.chart[data-series="rate"] { color: var(--rate); }
svg.chart[data-series="inFlight"] { color: var(--inFlight); }
svg.chart[data-series="ready"] { color: var(--ready); }
svg.chart path.line { fill: none; stroke: currentColor; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
svg.chart path.area { fill: currentColor; stroke: none; opacity: 0.15; }
#empty, #nomatch, #page-info { color: var(--dim); }
#paging { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; margin: 0 0 14px; }
#search { font: inherit; padding: 3px 8px; min-width: 240px; border: 1px solid var(--line); border-radius: 6px;
  background: var(--card); color: var(--fg); }
#paging button { font: inherit; padding: 2px 10px; }
#problems { border: 1px solid var(--warn); border-radius: 8px; padding: 8px 14px; margin: 0 0 14px;
  background: var(--card); }
#problems h2 { color: var(--warn); }
#problems ul { margin: 6px 0 0; padding-left: 18px; }
#problems li { overflow-wrap: anywhere; }
#problems li[data-problem="warning"] { color: var(--dim); }
</style>
</head>
<body data-state="connecting">
<header>
  <h1>zerohop <span id="version"></span></h1>
  <span id="connection" data-state="connecting">connecting</span>
  <span id="updated"></span>
</header>
<p id="summary"></p>
<nav id="paging">
  <input id="search" type="search" placeholder="filter by name or host" aria-label="filter targets" autocomplete="off">
  <button id="prev" type="button" disabled>&larr; previous</button>
  <button id="next" type="button" disabled>next &rarr;</button>
  <span id="page-info"></span>
</nav>
<section id="problems" hidden><h2>Configuration problems</h2><ul id="problem-list"></ul></section>
<main id="targets"></main>
<p id="empty" hidden>No targets: no HTTPScaledObject is loaded.</p>
<p id="nomatch" hidden>No target matches the filter.</p>
<template id="card-template">
  <section class="card">
    <header><h2 class="name"></h2><span class="badge"></span></header>
    <dl>
      <div><dt>replicas</dt><dd data-field="replicas"></dd></div>
      <div><dt>routable</dt><dd data-field="routable"></dd></div>
      <div><dt>in flight</dt><dd data-field="inFlight"></dd></div>
      <div><dt>held</dt><dd data-field="held"></dd></div>
      <div><dt>rate</dt><dd data-field="rate"></dd></div>
      <div><dt>requests</dt><dd data-field="requests"></dd></div>
      <div><dt>cold starts</dt><dd data-field="coldStarts"></dd></div>
      <div><dt>metric</dt><dd data-field="metricValue"></dd></div>
      <div class="wide"><dt>last cold start</dt><dd data-field="lastColdStart"></dd></div>
    </dl>
    <figure><figcaption><span>request rate <span class="window"></span></span><span class="scale"></span></figcaption>
      <svg class="chart" data-series="rate" viewBox="0 0 300 40" preserveAspectRatio="none">
        <path class="area" d=""/><path class="line" d=""/></svg></figure>
    <figure><figcaption><span>in flight <span class="window"></span></span><span class="scale"></span></figcaption>
      <svg class="chart" data-series="inFlight" viewBox="0 0 300 40" preserveAspectRatio="none">
        <path class="area" d=""/><path class="line" d=""/></svg></figure>
    <figure><figcaption><span>ready replicas <span class="window"></span></span><span class="scale"></span></figcaption>
      <svg class="chart" data-series="ready" viewBox="0 0 300 40" preserveAspectRatio="none">
        <path class="area" d=""/><path class="line" d=""/></svg></figure>
  </section>
</template>
<script>
"use strict";
const POLL_MS = 1000;
const TIMEOUT_MS = 2500;
const SPAN_MS = 5 * 60 * 1000;
// Until five minutes of samples exist the charts stretch what there is over at least this much time.
const MIN_SPAN_MS = 10 * POLL_MS;
// A gap longer than this between two samples (server unreachable) breaks the line instead of bridging it.
const GAP_MS = 3 * POLL_MS + TIMEOUT_MS;
const WIDTH = 300, HEIGHT = 40, PAD = 2;
// Targets per page: the server pages and filters (`status/targets`), so a poll costs the same at any count.
const PAGE_SIZE = 50;
const SEARCH_DELAY_MS = 250;
const SERIES = {
  rate: (t) => t.rate,
  inFlight: (t) => t.inFlight,
  ready: (t) => (t.replicas ? t.replicas.ready : null),
};
const histories = new Map();
let lastSuccess = null;
let offset = 0;
let query = new URLSearchParams(location.hash.slice(1)).get("q") || "";
// Each poll has a number; an answer to an older one (before a search or a page change) is dropped.
let generation = 0;
let timer = null;

const $ = (id) => document.getElementById(id);

function number(value) {
  if (value === null || value === undefined) return "-";
  return String(Math.round(value * 1000) / 1000);
}

function duration(seconds) {
  if (seconds < 1) return Math.round(seconds * 1000) + "ms";
  if (seconds < 60) return (Math.round(seconds * 10) / 10) + "s";
  const minutes = Math.floor(seconds / 60), rest = Math.floor(seconds % 60);
  return minutes + "m" + (rest ? String(rest).padStart(2, "0") + "s" : "");
}

function age(seconds) {
  seconds = Math.max(0, seconds);
  if (seconds < 60) return Math.floor(seconds) + "s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h ago";
  return Math.floor(seconds / 86400) + "d ago";
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], {hour12: false});
}

function niceMax(value) {
  if (value <= 1) return 1;
  const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

function summary(doc) {
  const parts = [];
  if (doc.draining) parts.push("DRAINING");
  parts.push("held " + (doc.heldTotal ?? 0));
  const ext = doc.extProc || {};
  parts.push("ext_proc streams " + (ext.streams ?? 0) + ", unmatched " + (ext.unmatched ?? 0));
  const provider = doc.provider || {};
  if (provider.provider === "kubernetes") {
    const leader = provider.leader ? (provider.identity || "?") + " (this replica)" : (provider.leaseHolder || "none");
    parts.push("provider kubernetes, leader " + leader);
  } else if (provider.provider) {
    parts.push("provider " + provider.provider);
  }
  if (doc.peers && doc.peers.peers && doc.peers.peers.length) {
    parts.push("peers " + doc.peers.answered + "/" + doc.peers.peers.length + " answered");
  }
  return parts.join("; ");
}

function problemLines(provider, now) {
  const lines = [];
  const since = (iso) => (iso ? ", since " + age((now - Date.parse(iso)) / 1000) : "");
  const reload = provider.reload || {};
  if (reload.error) {
    const good = reload.lastSuccess ? "; last applied " + age((now - Date.parse(reload.lastSuccess)) / 1000) : "";
    lines.push(["reload", "config reload failed, the previous config stays: " + reload.error.message
      + since(reload.error.since) + good]);
  }
  for (const p of provider.problems || []) {
    let where = p.file ? p.file + ": " : "";
    if (p.document) where += "document " + p.document + " ";
    if (p.kind || p.name) where += "(" + (p.kind || "?") + " " + (p.name || "?") + ") ";
    lines.push([p.severity || "error", where.trim() + ": " + p.message + since(p.since)]);
  }
  return lines;
}

function renderProblems(doc, now) {
  const list = $("problem-list");
  list.replaceChildren();
  for (const [kind, text] of problemLines(doc.provider || {}, now)) {
    const item = document.createElement("li");
    item.dataset.problem = kind;
    item.textContent = text;
    list.appendChild(item);
  }
  $("problems").hidden = list.children.length === 0;
}

function cardFor(name) {
  for (const card of $("targets").children) {
    if (card.dataset.target === name) return card;
  }
  const card = $("card-template").content.firstElementChild.cloneNode(true);
  card.dataset.target = name;
  card.querySelector(".name").textContent = name;
  $("targets").appendChild(card);
  return card;
}

function setField(card, field, text) {
  card.querySelector('[data-field="' + field + '"]').textContent = text;
}

function fill(card, target, now) {
  const state = target.routable ? "warm" : target.held > 0 ? "starting" : "cold";
  card.dataset.state = state;
  let badge = state;
  if (!target.routable && target.coldForSeconds !== null && target.coldForSeconds !== undefined) {
    badge += " for " + duration(target.coldForSeconds);
  }
  card.querySelector(".badge").textContent = badge;
  const replicas = target.replicas;
  setField(card, "replicas", replicas ? replicas.ready + "/" + replicas.desired : "-");
  setField(card, "routable", target.routable ? "yes" : "no");
  setField(card, "inFlight", number(target.inFlight));
  setField(card, "held", number(target.held));
  card.querySelector('[data-field="held"]').classList.toggle("busy", target.held > 0);
  setField(card, "rate", number(target.rate));
  setField(card, "requests", number(target.requests));
  setField(card, "coldStarts", number(target.coldStarts));
  setField(card, "metricValue", number(target.metricValue) + " / " + number(target.targetValue));
  let last = "-";
  if (target.lastColdStart) {
    last = age((now - Date.parse(target.lastColdStart)) / 1000);
    if (target.lastColdStartSeconds !== null && target.lastColdStartSeconds !== undefined) {
      last += ", took " + duration(target.lastColdStartSeconds);
    }
  }
  setField(card, "lastColdStart", last);
}

function draw(card, samples, now) {
  const span = samples.length ? Math.min(SPAN_MS, Math.max(MIN_SPAN_MS, now - samples[0].t)) : SPAN_MS;
  for (const svg of card.querySelectorAll("svg.chart")) {
    const key = svg.dataset.series;
    const points = samples.filter((s) => s[key] !== null && s[key] !== undefined);
    const max = niceMax(Math.max(0, ...points.map((s) => s[key])));
    let line = "", area = "", runStart = null, previous = null;
    for (const s of points) {
      const x = (WIDTH - ((now - s.t) / span) * WIDTH).toFixed(1);
      const y = (HEIGHT - PAD - (s[key] / max) * (HEIGHT - 2 * PAD)).toFixed(1);
      const split = previous === null || s.t - previous.t > GAP_MS;
      if (split && runStart !== null) area += "L" + previous.x + "," + HEIGHT + "L" + runStart + "," + HEIGHT + "Z";
      if (split) runStart = x;
      line += (split ? "M" : "L") + x + "," + y;
      area += (split ? "M" + x + "," + HEIGHT + "L" : "L") + x + "," + y;
      previous = {t: s.t, x: x};
    }
    if (previous !== null) area += "L" + previous.x + "," + HEIGHT + "L" + runStart + "," + HEIGHT + "Z";
    svg.querySelector("path.line").setAttribute("d", line);
    svg.querySelector("path.area").setAttribute("d", area);
    svg.dataset.points = String(points.length);
    svg.dataset.max = String(max);
    svg.dataset.span = String(span / 1000);
    const figure = svg.closest("figure");
    const current = points.length ? number(points[points.length - 1][key]) : "-";
    figure.querySelector(".scale").textContent = "now " + current + ", max " + number(max);
    figure.querySelector(".window").textContent = "last " + duration(span / 1000);
  }
}

function renderPaging(doc, page) {
  const shown = (page.targets || []).length;
  const total = doc.targetCount ?? page.total;
  let info = "";
  if (shown > 0) {
    info = (page.offset + 1) + "-" + (page.offset + shown) + " of " + page.total;
    if (query) info += " matching \u201c" + query + "\u201d (" + total + " targets)";
  }
  $("page-info").textContent = info;
  $("prev").disabled = page.offset <= 0;
  $("next").disabled = page.offset + shown >= page.total;
  $("empty").hidden = total > 0;
  $("nomatch").hidden = !(total > 0 && page.total === 0);
  // Targets went away under the current page: the next poll asks for the last page there is.
  if (page.total > 0 && page.offset >= page.total) offset = Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE;
}

function render(doc, page, now) {
  $("version").textContent = doc.version || "";
  $("summary").textContent = summary(doc);
  renderProblems(doc, now);
  const seen = new Set();
  for (const target of page.targets || []) {
    seen.add(target.name);
    let samples = histories.get(target.name);
    if (!samples) histories.set(target.name, (samples = []));
    const sample = {t: now};
    for (const key in SERIES) sample[key] = SERIES[key](target);
    samples.push(sample);
    while (samples.length && samples[0].t < now - SPAN_MS) samples.shift();
    const card = cardFor(target.name);
    fill(card, target, now);
    draw(card, samples, now);
  }
  for (const card of [...$("targets").children]) {
    if (!seen.has(card.dataset.target)) {
      histories.delete(card.dataset.target);
      card.remove();
    }
  }
  renderPaging(doc, page);
}

function setConnection(state, text) {
  document.body.dataset.state = state;
  $("connection").dataset.state = state;
  $("connection").textContent = text;
}

async function getJSON(url, signal) {
  const response = await fetch(url, {cache: "no-store", signal: signal});
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
}

function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(poll, delay);
}

async function poll() {
  const mine = ++generation;
  const controller = new AbortController();
  const deadline = setTimeout(() => controller.abort(), TIMEOUT_MS);
  const params = new URLSearchParams({offset: String(offset), limit: String(PAGE_SIZE)});
  if (query) params.set("q", query);
  try {
    const [doc, page] = await Promise.all([
      getJSON("status?summary=1", controller.signal),
      getJSON("status/targets?" + params, controller.signal),
    ]);
    if (mine !== generation) return;
    const now = Date.now();
    render(doc, page, now);
    lastSuccess = now;
    setConnection("live", "live");
    $("updated").textContent = "updated " + clock(now);
  } catch (error) {
    if (mine !== generation) return;
    const reason = error.name === "AbortError" ? "no answer" : error.message;
    if (lastSuccess === null) {
      setConnection("down", "unreachable (" + reason + ")");
    } else {
      setConnection("stale", "unreachable (" + reason + "), showing data from " + clock(lastSuccess));
    }
  } finally {
    clearTimeout(deadline);
    if (mine === generation) schedule(POLL_MS);
  }
}

$("search").value = query;
$("search").addEventListener("input", () => {
  query = $("search").value.trim();
  offset = 0;
  history.replaceState(null, "", query ? "#q=" + encodeURIComponent(query) : location.pathname + location.search);
  schedule(SEARCH_DELAY_MS);
});
$("prev").addEventListener("click", () => {
  offset = Math.max(0, offset - PAGE_SIZE);
  schedule(0);
});
$("next").addEventListener("click", () => {
  offset += PAGE_SIZE;
  schedule(0);
});
poll();
</script>
</body>
</html>
"""


async def page(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    """Serve the status page at `/` and `/ui`."""
    for path in PATHS:
        app.router.add_get(path, page)
