"""The status page of the admin port (`GET /` and `GET /ui`): one self-contained HTML document.

The page polls, every second, `status?summary=1` (the process, without targets), one page of targets,
`status/targets?offset=&limit=50&q=`, and the history of the targets in view, `status/history?target=...`
(the whole hour for a target it has not seen, then only the seconds since; all relative URLs, so the page
also works behind `kubectl proxy` or a path prefix): a page of 50 cards costs the same with 10 targets or
10,000. The history is the server's (`history`), so a reload or a second browser shows the same charts.

Per target in view it draws the current numbers, its hosts, and three charts over the chosen span (`#span`:
5 min, 15 min or an hour; also `#span=SECONDS` in the URL) on a shared time axis: ready vs desired replicas,
request rate, in flight and held, with each cold start as a shaded band (from the first held request to
routable) and its duration. Targets that share a host are versions of one route (a canary split by the
gateway): they are drawn side by side in one group, on common scales, with each one's share of the request
rate. A search box (`#search`, also `#q=...` in the URL) filters by name or host; `#prev` and `#next` page
through. It loads nothing else: no scripts, styles, fonts or images from anywhere, which its
Content-Security-Policy enforces.

Stable hooks for tests and scripts: each card is `section.card[data-target="ns/name"]` with
`[data-field=...]` values (`hosts` among them); a canary group is `section.group[data-host=HOST]` around its
cards. Each chart is `svg.chart[data-series=replicas|rate|inFlight]` (viewBox 600x100, drawn 96 px tall)
carrying `data-rows` (history rows drawn), `data-max`, `data-span` (seconds drawn: the span chosen, or
less while the server's history is younger, at least a minute) and `data-end` (the last tick
drawn, at x=600); its `path.line[data-key=ready|desired|rate|inFlight|held]` holds a step function as
`Mx,yHx,Vy...`, and each cold start is a `rect.cold[data-start][data-seconds]`. The time axis is
`.axis .tick[data-t]` (epoch seconds) labelled HH:MM in the browser's time zone. Configuration problems
(a failed reload, rejected documents) are `#problems li[data-problem=reload|error|warning]`, shown above
the cards; `#page-info` says which targets are shown ("1-50 of 10000").
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
:root { --bg: #f6f7f9; --card: #fff; --fg: #1d2330; --dim: #6b7385; --line: #d9dde5; --grid: #eceef2;
  --rate: #2f6fdb; --inFlight: #c2571a; --held: #b42318; --ready: #1f8a4c; --desired: #5b6170;
  --cold: #7c3aed; --warn: #b42318; --group: #eef2fb; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171c; --card: #1d2129; --fg: #e6e9ef; --dim: #949bab; --line: #343a46; --grid: #272c35;
    --rate: #6ea0ff; --inFlight: #f0924f; --held: #ff6b5e; --ready: #4cc383; --desired: #aeb4c2;
    --cold: #b794f6; --warn: #ff6b5e; --group: #1a2130; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 20px; background: var(--bg); color: var(--fg);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
body > header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 16px; margin-bottom: 4px; }
h1 { font-size: 20px; margin: 0; }
#version, #updated, #summary, #history-info { color: var(--dim); }
#summary { margin: 0 0 14px; }
#connection { font-weight: 600; }
#connection[data-state="live"] { color: var(--ready); }
#connection[data-state="stale"], #connection[data-state="down"] { color: var(--warn); }
#targets { display: grid; grid-template-columns: repeat(auto-fill, minmax(430px, 1fr)); gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; min-width: 0; }
body[data-state="stale"] .card { opacity: 0.55; }
.card > header { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; }
h2 { font-size: 15px; margin: 0; overflow-wrap: anywhere; }
.hosts { margin: 2px 0 0; color: var(--dim); font-size: 12px; overflow-wrap: anywhere; }
.badge { font-size: 12px; padding: 1px 8px; border-radius: 10px; border: 1px solid currentColor; white-space: nowrap; }
.card[data-state="warm"] .badge { color: var(--ready); }
.card[data-state="cold"] .badge { color: var(--dim); }
.card[data-state="starting"] .badge { color: var(--warn); }
dl { display: grid; grid-template-columns: repeat(4, 1fr); gap: 6px 10px; margin: 10px 0; }
dl div.wide { grid-column: span 4; }
dt { font-size: 11px; color: var(--dim); text-transform: uppercase; letter-spacing: 0.03em; }
dd { margin: 0; font-variant-numeric: tabular-nums; font-weight: 600; }
dd[data-field="held"].busy { color: var(--warn); }
figure { margin: 10px 0 0; position: relative; }
figcaption { display: flex; justify-content: space-between; gap: 8px; font-size: 12px; color: var(--dim); }
.key::before { content: ""; display: inline-block; width: 14px; height: 0; margin: 0 4px 3px 0;
  border-top: 2px solid currentColor; vertical-align: middle; }
.key.ready { color: var(--ready); } .key.desired { color: var(--desired); }
.key.desired::before { border-top-style: dashed; }
.key.rate { color: var(--rate); } .key.inFlight { color: var(--inFlight); } .key.held { color: var(--held); }
.key.cold { color: var(--cold); }
.key.cold::before { height: 9px; width: 9px; border: 0; background: currentColor; opacity: 0.5; }
.plot { position: relative; }
svg.chart { display: block; width: 100%; height: 96px; border-bottom: 1px solid var(--line); overflow: visible; }
svg.chart path.grid { stroke: var(--grid); stroke-width: 1; vector-effect: non-scaling-stroke; fill: none; }
svg.chart path.line { fill: none; stroke-width: 2; vector-effect: non-scaling-stroke; stroke-linejoin: round; }
svg.chart path.area { stroke: none; opacity: 0.13; }
svg.chart [data-key="ready"] { stroke: var(--ready); fill: var(--ready); }
svg.chart [data-key="desired"] { stroke: var(--desired); stroke-dasharray: 5 4; }
svg.chart [data-key="rate"] { stroke: var(--rate); fill: var(--rate); }
svg.chart [data-key="inFlight"] { stroke: var(--inFlight); fill: var(--inFlight); }
svg.chart [data-key="held"] { stroke: var(--held); }
svg.chart rect.cold { fill: var(--cold); opacity: 0.22; }
svg.chart path.coldline { stroke: var(--cold); stroke-width: 2; vector-effect: non-scaling-stroke; fill: none; }
.ymax { position: absolute; top: 0; left: 2px; font-size: 11px; color: var(--dim); pointer-events: none; }
.events { position: absolute; inset: 0; pointer-events: none; }
.cold-label { position: absolute; top: 14px; font-size: 11px; color: var(--cold); font-weight: 600;
  white-space: nowrap; transform: translateX(4px); }
.cold-label.left { transform: translateX(calc(-100% - 4px)); }
.axis { position: relative; height: 16px; font-size: 11px; color: var(--dim); font-variant-numeric: tabular-nums; }
.axis .tick { position: absolute; top: 2px; transform: translateX(-50%); white-space: nowrap; }
.nohistory { font-size: 12px; color: var(--dim); margin: 8px 0 0; }
.group { grid-column: 1 / -1; border: 1px solid var(--line); border-radius: 10px; padding: 10px 12px 12px;
  background: var(--group); }
.group > header { display: flex; flex-wrap: wrap; justify-content: space-between; align-items: baseline; gap: 4px 16px;
  margin-bottom: 8px; }
.group .share { color: var(--dim); font-variant-numeric: tabular-nums; }
.group .versions { display: grid; grid-template-columns: repeat(auto-fit, minmax(400px, 1fr)); gap: 12px; }
#empty, #nomatch, #page-info { color: var(--dim); }
#paging { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; margin: 0 0 14px; }
#search { font: inherit; padding: 3px 8px; min-width: 240px; border: 1px solid var(--line); border-radius: 6px;
  background: var(--card); color: var(--fg); }
#paging button, #span { font: inherit; padding: 2px 10px; }
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
  <label>charts <select id="span" aria-label="time shown by the charts">
    <option value="300">last 5 min</option><option value="900">last 15 min</option>
    <option value="3600">last hour</option></select></label>
  <span id="history-info"></span>
</nav>
<section id="problems" hidden><h2>Configuration problems</h2><ul id="problem-list"></ul></section>
<main id="targets"></main>
<p id="empty" hidden>No targets: no HTTPScaledObject is loaded.</p>
<p id="nomatch" hidden>No target matches the filter.</p>
<template id="group-template">
  <section class="group">
    <header><h2>canary: <span class="host"></span> <span class="count"></span></h2><span class="share"></span></header>
    <div class="versions"></div>
  </section>
</template>
<template id="card-template">
  <section class="card">
    <header><h2 class="name"></h2><span class="badge"></span></header>
    <p class="hosts" data-field="hosts"></p>
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
    <figure><figcaption><span>replicas <span class="key ready">ready</span> <span class="key desired">desired</span>
      <span class="key cold">cold start</span></span><span class="scale"></span></figcaption>
      <div class="plot"><svg class="chart" data-series="replicas" viewBox="0 0 600 100" preserveAspectRatio="none">
        <path class="grid" d=""/><g class="marks"></g><path class="area" data-key="ready" d=""/>
        <path class="line" data-key="ready" d=""/><path class="line" data-key="desired" d=""/></svg>
        <span class="ymax"></span><div class="events"></div></div></figure>
    <figure><figcaption><span><span class="key rate">request rate</span> (per second)</span><span class="scale"></span>
      </figcaption>
      <div class="plot"><svg class="chart" data-series="rate" viewBox="0 0 600 100" preserveAspectRatio="none">
        <path class="grid" d=""/><g class="marks"></g><path class="area" data-key="rate" d=""/>
        <path class="line" data-key="rate" d=""/></svg><span class="ymax"></span></div></figure>
    <figure><figcaption><span><span class="key inFlight">in flight</span> <span class="key held">held</span></span>
      <span class="scale"></span></figcaption>
      <div class="plot"><svg class="chart" data-series="inFlight" viewBox="0 0 600 100" preserveAspectRatio="none">
        <path class="grid" d=""/><g class="marks"></g><path class="area" data-key="inFlight" d=""/>
        <path class="line" data-key="inFlight" d=""/><path class="line" data-key="held" d=""/></svg>
        <span class="ymax"></span></div>
      <div class="axis"></div></figure>
    <p class="nohistory" hidden></p>
  </section>
</template>
<script>
"use strict";
const POLL_MS = 1000;
const TIMEOUT_MS = 2500;
const WIDTH = 600, HEIGHT = 100, PAD = 4;
// The SVG namespace, read from the template (the page names no URL).
const SVG = document.getElementById("card-template").content.querySelector("svg").namespaceURI;
// Targets per page: the server pages and filters (`status/targets`), so a poll costs the same at any count.
const PAGE_SIZE = 50;
const SEARCH_DELAY_MS = 250;
const COLUMNS = ["ready", "desired", "inFlight", "held", "rate"];
const CHARTS = {replicas: ["ready", "desired"], rate: ["rate"], inFlight: ["inFlight", "held"]};
const AREAS = {replicas: "ready", rate: "rate", inFlight: "inFlight"};
// The history of the targets in view, as the server keeps it (`status/history`): name -> rows by column,
// `t` their ticks (epoch seconds), `end` the last tick the server had sampled every target at.
const histories = new Map();
const cards = new Map();
const groups = new Map();
let historyState = "unknown";
// The server's history began at `serverFirst` (its start): while it is younger than the span chosen, the charts
// show what there is (at least MIN_SHOWN seconds) rather than a sliver at the right edge.
let serverFirst = 0, serverEnd = 0, shown = 900;
const MIN_SHOWN = 60;
let lastSuccess = null;
let offset = 0;
const initial = new URLSearchParams(location.hash.slice(1));
let query = initial.get("q") || "";
let span = [300, 900, 3600].includes(Number(initial.get("span"))) ? Number(initial.get("span")) : 900;
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

function clock(ms, seconds) {
  const options = {hour12: false, hour: "2-digit", minute: "2-digit"};
  if (seconds) options.second = "2-digit";
  return new Date(ms).toLocaleTimeString([], options);
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

// --- history ------------------------------------------------------------------------------------------------

function merge(name, body, end) {
  if (!body) return;
  let h = histories.get(name);
  if (!h) {
    h = {t: [], end: 0, cold: []};
    for (const c of COLUMNS) h[c] = [];
    histories.set(name, h);
  }
  let tick = 0;
  body.t.forEach((delta, i) => {
    tick += delta;
    if (h.t.length && tick <= h.t[h.t.length - 1]) return;
    h.t.push(tick);
    for (const c of COLUMNS) h[c].push(body[c][i]);
  });
  h.cold = body.coldStarts || [];
  h.end = Math.max(h.end, end, h.t.length ? h.t[h.t.length - 1] : 0);
  // Rows before the longest span drawn go, except the one still in effect at its start.
  let drop = 0;
  while (drop + 1 < h.t.length && h.t[drop + 1] <= h.end - 3600) drop++;
  if (drop) {
    h.t.splice(0, drop);
    for (const c of COLUMNS) h[c].splice(0, drop);
  }
}

function historyURL(names, since) {
  const params = new URLSearchParams();
  for (const name of names) params.append("target", name);
  if (since !== null) params.set("since", String(since));
  return "status/history?" + params;
}

// New targets get their whole hour, the others what the server sampled since their last poll.
async function fetchHistories(names, signal) {
  const fresh = names.filter((name) => !histories.has(name));
  const known = names.filter((name) => histories.has(name));
  const since = known.length ? Math.min(...known.map((name) => histories.get(name).end)) : null;
  const answers = await Promise.all([
    fresh.length ? getJSON(historyURL(fresh, null), signal) : null,
    known.length ? getJSON(historyURL(known, since), signal) : null,
  ]);
  for (const answer of answers) {
    if (!answer) continue;
    serverFirst = answer.first || 0;
    serverEnd = Math.max(serverEnd, answer.now || 0);
    for (const [name, body] of Object.entries(answer.targets)) merge(name, body, answer.now);
  }
}

// --- drawing ------------------------------------------------------------------------------------------------

const xOf = (t, end) => WIDTH - ((end - t) / shown) * WIDTH;
const yOf = (v, max) => HEIGHT - PAD - (v / max) * (HEIGHT - 2 * PAD);
const fixed = (v) => String(Math.round(v * 10) / 10);

// The index of the row in effect at the left edge (or the first row, when the history starts later).
function firstRow(h) {
  const from = h.end - shown;
  let i = 0;
  while (i + 1 < h.t.length && h.t[i + 1] <= from) i++;
  return i;
}

function visibleMax(h, keys) {
  let max = 0;
  if (!h) return max;
  for (let i = firstRow(h); i < h.t.length; i++) {
    for (const key of keys) if (h[key][i] !== null) max = Math.max(max, h[key][i]);
  }
  return max;
}

// A step function: each value holds from its row's tick to the next row's (or to the right edge). A run
// of unknown values (null) breaks the line. Returns the line, the area under it and the rows drawn.
function steps(h, key, max) {
  let line = "", area = "", rows = 0, runStart = null, x = 0;
  for (let i = firstRow(h); i < h.t.length; i++) {
    const v = h[key][i];
    const x0 = Math.max(0, xOf(h.t[i], h.end));
    x = i + 1 < h.t.length ? Math.min(WIDTH, xOf(h.t[i + 1], h.end)) : WIDTH;
    if (v === null) {
      if (runStart !== null) area += "V" + HEIGHT + "H" + runStart + "Z";
      runStart = null;
      continue;
    }
    const y = fixed(yOf(v, max));
    if (runStart === null) {
      line += "M" + fixed(x0) + "," + y;
      area += "M" + fixed(x0) + "," + HEIGHT + "V" + y;
      runStart = fixed(x0);
    } else {
      line += "V" + y;
      area += "V" + y;
    }
    line += "H" + fixed(x);
    area += "H" + fixed(x);
    rows++;
  }
  if (runStart !== null) area += "V" + HEIGHT + "H" + runStart + "Z";
  return [line, area, rows];
}

function tickStep() {
  for (const step of [10, 15, 30, 60, 120, 300, 600, 900, 1800]) if (shown / step <= 8) return step;
  return 3600;
}

function drawAxis(card, h) {
  const axis = card.querySelector(".axis");
  axis.replaceChildren();
  const grid = [];
  if (!h) return grid;
  const step = tickStep();
  for (let t = Math.ceil((h.end - shown) / step) * step; t <= h.end; t += step) {
    const x = xOf(t, h.end);
    grid.push(x);
    if (x < WIDTH * 0.05 || x > WIDTH * 0.95) continue;
    const label = document.createElement("span");
    label.className = "tick";
    label.dataset.t = String(t);
    label.style.left = (x / WIDTH) * 100 + "%";
    label.textContent = clock(t * 1000, step < 60);
    axis.appendChild(label);
  }
  return grid;
}

function drawMarks(svg, h) {
  const marks = svg.querySelector("g.marks");
  marks.replaceChildren();
  for (const event of h ? h.cold : []) {
    const stop = event.seconds === null ? h.end : event.start + event.seconds;
    if (stop < h.end - shown || event.start > h.end) continue;
    const x0 = Math.max(0, xOf(event.start, h.end)), x1 = Math.min(WIDTH, xOf(stop, h.end));
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("class", "cold");
    rect.setAttribute("x", fixed(x0));
    rect.setAttribute("y", "0");
    rect.setAttribute("width", fixed(Math.max(4, x1 - x0)));
    rect.setAttribute("height", String(HEIGHT));
    rect.dataset.start = String(event.start);
    rect.dataset.seconds = event.seconds === null ? "" : String(event.seconds);
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = "cold start at " + clock(event.start * 1000, true)
      + (event.seconds === null ? ", still cold" : ", took " + duration(event.seconds));
    rect.appendChild(tip);
    const edge = document.createElementNS(SVG, "path");
    edge.setAttribute("class", "coldline");
    edge.setAttribute("d", "M" + fixed(x0) + ",0V" + HEIGHT);
    marks.append(rect, edge);
  }
}

function drawEventLabels(card, h) {
  const layer = card.querySelector(".events");
  layer.replaceChildren();
  if (!h) return;
  let previous = null;
  for (const event of [...h.cold].reverse()) {
    if (event.start < h.end - shown || event.start > h.end) continue;
    const x = (xOf(event.start, h.end) / WIDTH) * 100;
    if (previous !== null && previous - x < 14) continue;
    const label = document.createElement("span");
    label.className = "cold-label" + (x > 78 ? " left" : "");
    label.style.left = x + "%";
    label.textContent = (previous === null ? "cold start " : "")
      + (event.seconds === null ? "(waking)" : duration(event.seconds));
    layer.appendChild(label);
    previous = x;
  }
}

// Draw a card's charts from its history; `maxes` (chart -> value) shares scales across a canary group.
function draw(card, h, maxes) {
  const grid = drawAxis(card, h);
  const gridPath = grid.map((x) => "M" + fixed(x) + ",0V" + HEIGHT).join("");
  for (const svg of card.querySelectorAll("svg.chart")) {
    const series = svg.dataset.series;
    const max = maxes[series];
    let rows = 0;
    for (const path of svg.querySelectorAll("path.line")) {
      const key = path.dataset.key;
      const [line, area, drawn] = h ? steps(h, key, max) : ["", "", 0];
      path.setAttribute("d", line);
      if (AREAS[series] === key) svg.querySelector("path.area").setAttribute("d", area);
      rows = Math.max(rows, drawn);
    }
    svg.querySelector("path.grid").setAttribute("d", gridPath);
    drawMarks(svg, h);
    svg.dataset.rows = String(rows);
    svg.dataset.max = String(max);
    svg.dataset.span = String(shown);
    svg.dataset.end = h ? String(h.end) : "";
    const plot = svg.closest(".plot");
    plot.querySelector(".ymax").textContent = number(max);
    const figure = svg.closest("figure");
    const now = CHARTS[series].map((key) => (h && h.t.length ? number(h[key][h.t.length - 1]) : "-"));
    figure.querySelector(".scale").textContent = "now " + now.join(" / ");
  }
  drawEventLabels(card, h);
  const note = card.querySelector(".nohistory");
  note.hidden = Boolean(h);
  note.textContent = historyState === "off" ? "history is off on this server (--history-max-mib 0)"
    : "no history yet";
}

function maxesFor(names) {
  const maxes = {};
  for (const [series, keys] of Object.entries(CHARTS)) {
    maxes[series] = niceMax(Math.max(0, ...names.map((name) => visibleMax(histories.get(name), keys))));
  }
  return maxes;
}

// --- cards and canary groups --------------------------------------------------------------------------------

function cardFor(name) {
  let card = cards.get(name);
  if (!card) {
    card = $("card-template").content.firstElementChild.cloneNode(true);
    card.dataset.target = name;
    card.querySelector(".name").textContent = name;
    cards.set(name, card);
  }
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
  const hosts = target.hosts || [];
  setField(card, "hosts", hosts.length ? hosts.join(", ") : "no hosts");
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

// Targets sharing a host are versions of one route (a canary: the gateway splits that host between them).
function versionGroups(targets) {
  const parent = targets.map((_, i) => i);
  const find = (i) => (parent[i] === i ? i : (parent[i] = find(parent[i])));
  const byHost = new Map();
  targets.forEach((target, i) => {
    for (const host of target.hosts || []) {
      if (byHost.has(host)) parent[find(i)] = find(byHost.get(host));
      else byHost.set(host, i);
    }
  });
  const found = new Map();
  targets.forEach((target, i) => {
    const root = find(i);
    if (!found.has(root)) found.set(root, []);
    found.get(root).push(target);
  });
  return [...found.values()];
}

function sharedHosts(members) {
  const counts = new Map();
  for (const target of members) {
    for (const host of new Set(target.hosts || [])) counts.set(host, (counts.get(host) || 0) + 1);
  }
  return [...counts].filter(([, count]) => count > 1).map(([host]) => host).sort();
}

function groupFor(members) {
  const hosts = sharedHosts(members);
  const id = hosts.join(" ");
  let group = groups.get(id);
  if (!group) {
    group = $("group-template").content.firstElementChild.cloneNode(true);
    group.dataset.host = hosts[0] || "";
    group.dataset.hosts = id;
    group.querySelector(".host").textContent = hosts.join(", ");
    groups.set(id, group);
  }
  group.querySelector(".count").textContent = "(" + members.length + " versions)";
  const total = members.reduce((sum, target) => sum + (target.rate || 0), 0);
  const share = (t) => t.name.split("/").pop() + " " + Math.round(((t.rate || 0) / total) * 100) + "%";
  group.querySelector(".share").textContent = total > 0
    ? "request rate " + members.map(share).join(" \u00b7 ")
    : "no requests in the last window";
  group.querySelector(".versions").replaceChildren(...members.map((target) => cardFor(target.name)));
  return [group, id];
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

let lastDoc = null, lastPage = null;

function render(doc, page, now) {
  lastDoc = doc;
  lastPage = page;
  $("version").textContent = doc.version || "";
  $("summary").textContent = summary(doc);
  renderProblems(doc, now);
  const targets = page.targets || [];
  const units = [], seenGroups = new Set();
  shown = serverFirst && serverEnd - serverFirst < span ? Math.max(MIN_SHOWN, serverEnd - serverFirst) : span;
  for (const members of versionGroups(targets)) {
    for (const target of members) fill(cardFor(target.name), target, now);
    const names = members.map((target) => target.name);
    const maxes = maxesFor(names);
    for (const name of names) draw(cardFor(name), histories.get(name), maxes);
    if (members.length > 1) {
      const [group, id] = groupFor(members);
      seenGroups.add(id);
      units.push(group);
    } else {
      units.push(cardFor(names[0]));
    }
  }
  $("targets").replaceChildren(...units);
  const seen = new Set(targets.map((target) => target.name));
  for (const name of [...cards.keys()]) {
    if (!seen.has(name)) {
      cards.delete(name);
      histories.delete(name);
    }
  }
  for (const id of [...groups.keys()]) if (!seenGroups.has(id)) groups.delete(id);
  renderPaging(doc, page);
  const info = {on: "", off: "history off on the server", error: "history unavailable"};
  $("history-info").textContent = info[historyState] || "";
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
    try {
      await fetchHistories((page.targets || []).map((target) => target.name), controller.signal);
      historyState = "on";
    } catch (error) {
      if (mine !== generation) return;
      historyState = error.message === "HTTP 404" ? "off" : "error";
    }
    if (mine !== generation) return;
    const now = Date.now();
    render(doc, page, now);
    lastSuccess = now;
    setConnection("live", "live");
    $("updated").textContent = "updated " + clock(now, true);
  } catch (error) {
    if (mine !== generation) return;
    const reason = error.name === "AbortError" ? "no answer" : error.message;
    if (lastSuccess === null) {
      setConnection("down", "unreachable (" + reason + ")");
    } else {
      setConnection("stale", "unreachable (" + reason + "), showing data from " + clock(lastSuccess, true));
    }
  } finally {
    clearTimeout(deadline);
    if (mine === generation) schedule(POLL_MS);
  }
}

function remember() {
  const params = new URLSearchParams();
  if (query) params.set("q", query);
  if (span !== 900) params.set("span", String(span));
  const hash = params.toString();
  history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
}

$("search").value = query;
$("span").value = String(span);
$("search").addEventListener("input", () => {
  query = $("search").value.trim();
  offset = 0;
  remember();
  schedule(SEARCH_DELAY_MS);
});
$("span").addEventListener("change", () => {
  span = Number($("span").value);
  remember();
  if (lastDoc !== null) render(lastDoc, lastPage, Date.now());
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
