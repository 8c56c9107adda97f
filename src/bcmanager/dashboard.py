"""The live dashboard at `/`: one self-contained page (inline CSS and plain JavaScript).

Nothing is loaded from elsewhere, so it works on a cluster without internet. The page
polls `/v1/status` every two seconds and `/v1/history` (basecalled per time bucket over
the whole run, from the ledger) every ten, and keeps the rates it has seen since it was
opened, so the rate chart is complete after a reload and smooth while it stays open.
Every value from the server is written with `textContent`, never as HTML.

With model generations beyond the implicit one, the progress cards and bar follow the
live generation (the run as it is written), a generations table shows each one's files
by state, share done and ETA, the chart draws one line per generation and the yield
table names the generation of each row; throughput is the whole fleet's.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse

from bcmanager.progress import Progress


def router(progress: Progress) -> APIRouter:
    """Routes `/` (the page) and `/v1/history` (its rate-over-time data)."""
    routes = APIRouter()

    @routes.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"cache-control": "no-store"})

    @routes.get("/v1/history", tags=["v1"])
    def history() -> JSONResponse:
        """Files, bytes, reads and samples basecalled per time bucket (`bucket_s` wide):
        `points` every generation together, `generations[]` each one's own."""
        return JSONResponse(progress.history())  # encoded here, off the event loop

    return routes


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bcmanager</title>
<link rel="icon" href="data:,">
<style>
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2430; --mute:#6b7480; --line:#e3e6ea;
        --done:#2e9e5b; --run:#3a7bd5; --bad:#d64545; --warn:#d89b1d; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;
       background:var(--bg); color:var(--ink); }
header { display:flex; gap:1em; align-items:baseline; flex-wrap:wrap;
         padding:12px 20px; background:#1d2430; color:#fff; }
header h1 { font-size:18px; margin:0; }
header .paths { color:#b8c0cc; font-size:12px; font-family:ui-monospace,monospace; }
#state { padding:2px 10px; border-radius:10px; background:#555; font-weight:600; }
#state.finished { background:var(--done); } #state.basecalling { background:var(--run); }
#state.idle { background:#777; } #state.down { background:var(--bad); }
#updated { margin-left:auto; color:#b8c0cc; font-size:12px; }
#banner, .banner { display:none; background:var(--bad); color:#fff; padding:6px 20px; }
main { padding:16px 20px; display:grid; gap:16px;
       grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:12px 14px; min-width:0; }
section.wide { grid-column:1/-1; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.05em; color:var(--mute);
     margin:0 0 8px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:10px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 10px; }
.card .v { font-size:22px; font-weight:650; font-variant-numeric:tabular-nums; }
.card .l { color:var(--mute); font-size:12px; }
.bar { display:flex; height:14px; border-radius:7px; overflow:hidden; background:var(--line);
       margin:12px 0 4px; }
.bar div { height:100%; }
.legend { color:var(--mute); font-size:12px; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px;
            margin:0 4px 0 10px; vertical-align:-1px; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:4px 6px; border-bottom:1px solid var(--line);
         vertical-align:top; }
th { color:var(--mute); font-weight:600; font-size:12px; }
td.num, th.num { text-align:right; }
td.mono { font-family:ui-monospace,monospace; font-size:12px; word-break:break-all; }
.empty { color:var(--mute); font-style:italic; }
.scroll { max-height:320px; overflow:auto; }
svg text { font-size:11px; fill:var(--mute); }
.hidden { display:none; }
</style>
</head>
<body>
<header>
  <h1>bcmanager</h1><span id="state">loading</span>
  <span class="paths" id="paths"></span>
  <span id="updated"></span>
</header>
<div id="banner">Cannot reach the manager; retrying.</div>
<div id="space-banner" class="banner"></div>
<main>
<section class="wide">
  <h2 id="progress-title">Progress against what has been written</h2>
  <div class="cards">
    <div class="card"><div class="v"><span id="files-done">-</span> / <span id="files-total">-</span></div>
      <div class="l">files basecalled / written</div></div>
    <div class="card"><div class="v" id="bytes-done">-</div><div class="l" id="bytes-label">pod5 basecalled</div></div>
    <div class="card"><div class="v" id="reads-done">-</div><div class="l" id="reads-label">reads basecalled</div></div>
    <div class="card"><div class="v" id="rate">-</div><div class="l" id="rate-label">throughput</div></div>
    <div class="card"><div class="v" id="files-per-min">-</div><div class="l">files / min</div></div>
    <div class="card"><div class="v" id="eta">-</div><div class="l">ETA for what is written</div></div>
    <div class="card"><div class="v" id="quarantined-count">-</div><div class="l">quarantined</div></div>
    <div class="card"><div class="v" id="engines-count">-</div><div class="l">engines (busy / seen)</div></div>
  </div>
  <div class="bar" id="bar"><div id="bar-done" style="background:var(--done)"></div>
    <div id="bar-assigned" style="background:var(--run)"></div>
    <div id="bar-quarantined" style="background:var(--bad)"></div></div>
  <div class="legend"><span id="percent">0%</span>
    <i style="background:var(--done)"></i>done <i style="background:var(--run)"></i>being basecalled
    <i style="background:var(--bad)"></i>quarantined <i style="background:var(--line)"></i>queued</div>
</section>
<section class="wide hidden" id="generations-section"><h2>Generations (models)</h2>
  <div class="scroll"><table id="generations"></table></div></section>
<section class="wide">
  <h2 id="chart-title">Rate over time</h2>
  <svg id="chart" width="100%" height="180" role="img" aria-label="basecalling rate over time"></svg>
</section>
<section><h2>Engines</h2><div class="scroll"><table id="engines"></table></div></section>
<section><h2>Running jobs</h2><div class="scroll"><table id="jobs"></table></div></section>
<section><h2>Runs (flow cells)</h2><div class="scroll"><table id="runs"></table></div></section>
<section><h2 id="yields-title">Yield per run and barcode</h2><div class="scroll"><table id="yields"></table></div></section>
<section><h2>Files in slices</h2><div class="scroll"><table id="sliced"></table></div></section>
<section><h2>Quarantined files</h2><div class="scroll"><table id="quarantine"></table></div></section>
<section class="wide"><h2>Recent events</h2><div class="scroll"><table id="events"></table></div></section>
</main>
<script>
"use strict";
const STATUS_MS = 2000, HISTORY_MS = 10000;
const COLOURS = ["#3a7bd5", "#2e9e5b", "#d89b1d", "#8e44ad", "#d64545", "#16a2b8"];
let history = null, live = [], lastStatus = null;

const $ = (id) => document.getElementById(id);
function set(id, text) { $(id).textContent = text; }
function num(n) { return n == null ? "-" : Number(n).toLocaleString("en-US"); }
function si(n, unit) {
  if (n == null) return "-";
  const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [f, p] of steps) if (Math.abs(n) >= f) return (n / f).toFixed(2) + " " + p + unit;
  return (+n).toFixed(n < 10 && n % 1 ? 2 : 0) + " " + unit;
}
function dur(s) {
  if (s == null) return "-";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
}
function clock(t) { return t == null ? "-" : new Date(t * 1000).toLocaleTimeString("en-GB"); }

function table(id, headers, rows, empty) {
  const t = $(id);
  t.replaceChildren();
  const head = t.createTHead().insertRow();
  for (const h of headers) {
    const th = document.createElement("th");
    th.textContent = h.label;
    if (h.num) th.className = "num";
    head.appendChild(th);
  }
  const body = t.createTBody();
  if (!rows.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = headers.length; td.className = "empty"; td.textContent = empty;
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    row.forEach((value, i) => {
      const td = tr.insertCell();
      td.textContent = value == null ? "-" : String(value);
      if (headers[i].num) td.className = "num";
      if (headers[i].mono) td.className = "mono";
    });
  }
}

// More than the implicit generation (one, with no model of its own): say which is which.
function gensShown(s) {
  const g = s.generations || [];
  return g.length > 1 || g.some((x) => x.model != null);
}
function liveGen(s) { return (s.generations || []).find((g) => g.live) || null; }
function sumOf(obj) { return Object.values(obj).reduce((a, b) => a + b, 0); }
function recipe(g) {
  const o = g.options || {}, extras = [];
  if (o.kit_name) extras.push("kit " + o.kit_name);
  if (o.modified_bases && o.modified_bases.length) extras.push("mods " + o.modified_bases.join("+"));
  return (g.model == null ? "the engines' own" : g.model) + (extras.length ? " (" + extras.join(", ") + ")" : "");
}

function rateText(th) {
  if (th.samples_per_s != null) return si(th.samples_per_s, "samples/s");
  return si(th.bytes_per_s, "B/s");
}

function render(s) {
  lastStatus = s;
  const f = s.files, p = s.progress, th = s.throughput;
  const shown = gensShown(s), lg = liveGen(s);
  const lf = lg ? lg.files : f;  // the cards and the bar: the live generation's files
  const total = lg ? sumOf(lf) : s.files_total;
  const busy = f.assigned > 0 || f.queued > 0;
  const state = busy ? "basecalling" : s.state === "done" ? "done"
    : s.finished ? "caught up" : "waiting";
  $("state").textContent = state;
  $("state").className = busy ? "basecalling" : s.finished ? "finished" : "idle";
  set("paths", s.input + "  \\u2192  " + s.output);
  const space = s.output_space || {};  // OUTPUT short of --min-free: hand-outs paused
  $("space-banner").style.display = space.short ? "block" : "none";
  if (space.short) {
    set("space-banner", "Paused since " + clock(space.short_since) + ": OUTPUT has "
      + si(space.free_bytes || 0, "B") + " free, under the " + si(space.min_free_bytes, "B")
      + " minimum (--min-free); no batch is handed out until it has room.");
  }
  set("updated", "updated " + clock(s.now));
  set("progress-title", "Progress against what has been written"
    + (shown && lg ? " (live generation: " + lg.name + ")" : ""));
  set("files-done", num(lf.done)); set("files-total", num(total));
  set("bytes-done", si(p.done.bytes, "B"));
  set("bytes-label", "pod5 basecalled of " + si(p.written.bytes, "B"));
  const liveYields = (s.yields || []).filter((y) => !lg || y.generation == null || y.generation === lg.name);
  const counted = liveYields.reduce((n, y) => n + y.reads, 0);
  if (counted > 0) {  // the engines' own count of the reads they wrote
    set("reads-done", num(counted));
    set("reads-label", "reads basecalled (engines' count)");
  } else {
    set("reads-done", num(p.done.reads));
    set("reads-label", p.done.counts_known ? "reads basecalled" : "reads basecalled (counts not known for every file)");
  }
  set("rate", rateText(th));
  set("rate-label", "throughput, last " + dur(th.window_s) + (shown ? ", all generations" : ""));
  set("files-per-min", (+th.files_per_min).toFixed(1));
  set("eta", s.eta_s === 0 ? "done" : dur(s.eta_s));
  set("quarantined-count", num(lf.quarantined));
  const working = s.engines.filter((e) => e.job_id != null).length;
  set("engines-count", working + " / " + s.engines.length);
  const pct = (n) => (total ? (100 * n / total) : 0);
  $("bar-done").style.width = pct(lf.done) + "%";
  $("bar-assigned").style.width = pct(lf.assigned) + "%";
  $("bar-quarantined").style.width = pct(lf.quarantined) + "%";
  set("percent", (total ? (100 * lf.done / total).toFixed(1) : "0.0") + "% basecalled");

  $("generations-section").classList.toggle("hidden", !shown);
  table("generations",
    [{label: "generation"}, {label: "role"}, {label: "model"}, {label: "done", num: true},
     {label: "queued", num: true}, {label: "running", num: true},
     {label: "quarantined", num: true}, {label: "progress", num: true},
     {label: "throughput", num: true}, {label: "ETA", num: true}],
    (s.generations || []).map((g) => [g.name, g.live ? "live" : "backfill", recipe(g),
      num(g.files.done), num(g.files.queued), num(g.files.assigned), num(g.files.quarantined),
      g.share == null ? "-" : (100 * g.share).toFixed(1) + "%",
      g.throughput ? rateText(g.throughput) : "-", g.eta_s === 0 ? "done" : dur(g.eta_s)]),
    "no generation");

  const jobsById = new Map(s.running_jobs.map((j) => [j.job_id, j]));
  table("engines",
    [{label: "engine"}, {label: "job"}, {label: "files in job", num: true},
     {label: "throughput", num: true}, {label: "files done", num: true}, {label: "last seen", num: true}],
    s.engines.map((e) => [e.engine, e.job_id == null ? "idle" : "#" + e.job_id,
      e.job_id != null && jobsById.has(e.job_id) ? jobsById.get(e.job_id).n_files : null,
      rateText(e.throughput), num(e.basecalled.files), dur(e.last_seen_s) + " ago"]),
    "no engine has called yet");
  table("jobs",
    [{label: "job", num: true}, {label: "engine"}, {label: "state"}, {label: "files", num: true},
     {label: "running for", num: true}, {label: "lease left", num: true}],
    s.running_jobs.map((j) => [j.job_id, j.engine, j.state, j.n_files, dur(s.now - j.created),
      j.state === "assigned" ? dur(Math.max(0, j.lease_expires - s.now)) : null]),
    "no job running");
  table("runs",
    [{label: "run"}, {label: "state"}, {label: "done / files", num: true},
     {label: "quarantined", num: true}, {label: "pod5", num: true}],
    s.runs.map((r) => [r.run, r.state, num(r.files.done) + " / " + num(r.written.files),
      num(r.files.quarantined), si(r.written.bytes, "B")]),
    "no run found yet");
  set("yields-title", shown ? "Yield per generation, run and barcode" : "Yield per run and barcode");
  const yieldHeads = [{label: "run folder"}, {label: "barcode"}, {label: "reads", num: true},
     {label: "bases", num: true}, {label: "N50", num: true}, {label: "mean Q", num: true},
     {label: "pass", num: true}];
  table("yields", shown ? [{label: "generation"}, ...yieldHeads] : yieldHeads,
    (s.yields || []).map((y) => (shown ? [y.generation] : []).concat([y.run, y.barcode,
      num(y.reads), si(y.bases, "b"), num(y.n50), y.mean_qscore.toFixed(1),
      (100 * y.pass_share).toFixed(1) + "%"])),
    "nothing counted yet");
  table("sliced",
    [{label: "file", mono: true}, {label: "generation"}, {label: "slices", num: true},
     {label: "reads merged", num: true}, {label: "out", num: true}, {label: "queued", num: true}],
    (s.sliced || []).map((x) => [x.path, x.generation, num(x.slices),
      num(x.reads_done) + " / " + num(x.reads) + (x.reads ? " (" + (100 * x.reads_done / x.reads).toFixed(0) + "%)" : ""),
      num(x.reads_out), num(x.reads_queued)]),
    "none (no file above --slice-above is going out in slices)");
  table("quarantine", [{label: "file", mono: true}, {label: "reason"}],
    s.quarantined.map((q) => [q.path, q.reason]), "none");
  table("events",
    [{label: "time"}, {label: "what"}, {label: "job", num: true}, {label: "change"},
     {label: "count", num: true}, {label: "detail"}],
    s.events.slice().reverse().map((e) => [clock(e.at), e.entity, e.job_id,
      e.from || e.to ? (e.from || "") + " \\u2192 " + (e.to || "") : "", e.count, e.detail]),
    "no events");

  const gens = {};
  for (const g of s.generations || []) gens[g.name] = g.progress.done;
  live.push({t: s.now, done: (s.all_generations || p).done, gens, basis: th.basis});
  if (live.length > 2000) live.shift();
  drawChart();
}

function seriesPoints(hist, seen, basis) {
  // Ledger history (whole run) plus what this page saw since the last history fetch.
  const bucket = history ? history.bucket_s : 1;
  const pts = [];
  let lastT = -Infinity;
  for (const p of hist) {
    pts.push({t: p.t + bucket / 2, v: p[basis] / bucket});
    lastT = p.t + bucket;
  }
  for (let i = 1; i < seen.length; i++) {
    const a = seen[i - 1], b = seen[i];
    if (!a.done || !b.done || b.t <= lastT || b.t <= a.t) continue;
    pts.push({t: b.t, v: Math.max(0, (b.done[basis] - a.done[basis]) / (b.t - a.t))});
  }
  return pts;
}

function chartSeries() {
  // One line for the fleet, or one per generation where there is more than the implicit one.
  const fromHistory = history && history.points.length ? history.basis : null;
  const live0 = lastStatus ? lastStatus.throughput.basis : "bytes";
  const basis = (fromHistory || live0) === "samples" ? "samples" : "bytes";
  const names = lastStatus && gensShown(lastStatus) ? lastStatus.generations.map((g) => g.name) : [null];
  const series = names.map((name) => {
    let hist = history ? history.points : [];
    if (name != null) {
      const own = history && (history.generations || []).find((g) => g.name === name);
      hist = own ? own.points : [];
    }
    const seen = live.map((l) => ({t: l.t, done: name == null ? l.done : l.gens[name]}));
    return {name, pts: seriesPoints(hist, seen, basis)};
  });
  return {basis, series};
}

function drawChart() {
  const svg = $("chart"), ns = "http://www.w3.org/2000/svg";
  const W = svg.clientWidth || 800, H = 180, L = 70, B = 22, T = 8;
  svg.replaceChildren();
  const {basis, series} = chartSeries();
  set("chart-title", "Rate over time (" + (basis === "samples" ? "samples/s" : "pod5 bytes/s") + ")");
  const el = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    svg.appendChild(e); return e;
  };
  const all = series.flatMap((s) => s.pts);
  if (!series.some((s) => s.pts.length >= 2)) {
    el("text", {x: L, y: H / 2}, "waiting for basecalled files\\u2026");
    return;
  }
  const t0 = Math.min(...all.map((p) => p.t)), t1 = Math.max(...all.map((p) => p.t));
  const vmax = Math.max(...all.map((p) => p.v)) || 1;
  const x = (t) => L + (W - L - 10) * (t - t0) / Math.max(1e-9, t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - v / vmax);
  el("line", {x1: L, y1: y(0), x2: W - 10, y2: y(0), stroke: "#ccc"});
  el("line", {x1: L, y1: T, x2: L, y2: y(0), stroke: "#ccc"});
  el("text", {x: 4, y: T + 10}, si(vmax, basis === "samples" ? "/s" : "B/s"));
  el("text", {x: 4, y: y(0)}, "0");
  el("text", {x: L, y: H - 6}, clock(t0));
  el("text", {x: W - 70, y: H - 6}, clock(t1));
  let first = true;
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = s.pts.slice().sort((a, b) => a.t - b.t);
    if (pts.length >= 2) {
      const d = pts.map((p, j) => (j ? "L" : "M") + x(p.t).toFixed(1) + "," + y(p.v).toFixed(1)).join(" ");
      const attrs = {d, fill: "none", stroke: colour, "stroke-width": 2, class: "chart-series"};
      if (first) attrs.id = "chart-line";
      first = false;
      el("path", attrs);
    }
    if (s.name != null) {
      el("text", {x: W - 160, y: T + 12 + 14 * i, class: "chart-legend", style: "fill:" + colour}, "\\u2014 " + s.name);
    }
  });
}

async function getJSON(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function pollStatus() {
  try {
    render(await getJSON("/v1/status"));
    $("banner").style.display = "none";
  } catch (err) {
    $("banner").style.display = "block";
    $("state").textContent = "unreachable"; $("state").className = "down";
  } finally {
    setTimeout(pollStatus, STATUS_MS);
  }
}

async function pollHistory() {
  try {
    history = await getJSON("/v1/history");
    if (lastStatus) drawChart();
  } catch (err) {
    /* the status poll shows the banner */
  } finally {
    setTimeout(pollHistory, HISTORY_MS);
  }
}

window.addEventListener("resize", drawChart);
pollHistory();
pollStatus();
</script>
</body>
</html>
"""
