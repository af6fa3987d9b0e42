// Tokenpulse dashboard: token table, token page (candles, grades, signals, levels, predictions, ROI),
// halving cycles and alert management, kept live by /v1/stream. No inline script (the page's CSP forbids it).
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const money = (v) => v == null ? "—" : v >= 1e12 ? `$${(v/1e12).toFixed(2)}T` : v >= 1e9 ? `$${(v/1e9).toFixed(1)}B`
  : v >= 1 ? `$${v.toLocaleString("en-US", {maximumFractionDigits: 2})}` : `$${v.toPrecision(4)}`;
const pct = (v) => v == null ? "—" : `<span class="${v >= 0 ? "up" : "down"}">${v >= 0 ? "+" : ""}${v.toFixed(2)}%</span>`;
const signed = (v, unit = "") => v == null ? "—" : `${v >= 0 ? "+" : ""}${typeof v === "number" && unit ? v.toFixed(0) : v}${unit}`;
const grade = (v) => v == null ? "—" : v.toFixed(1);
const when = (iso) => (iso || "").replace("T", " ").slice(0, 19);
const badge = (s) => s ? `<span class="badge ${esc(s.direction)}">${esc(s.direction)} ${s.strength != null ? s.strength.toFixed(2) : ""}</span>` : "—";
const rows = (id, list) => { $(id).querySelector("tbody").innerHTML = list.map(r => `<tr>${r.map(c => `<td>${c}</td>`).join("")}</tr>`).join(""); };
const secs = (iso) => Math.floor(Date.parse(iso) / 1000);
const state = {key: null, tokens: new Map(), page: null, symbol: null, charts: [], priceSeries: null, stream: null, streamQuery: ""};

class HttpError extends Error { constructor(status, message) { super(message); this.status = status; } }

async function apiKey() {
  let key = localStorage.getItem("tokenpulse-key");
  if (!key) {
    const r = await fetch("/v1/keys", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify({name: "dashboard"})});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error?.message || "could not get a key");
    key = body.key; localStorage.setItem("tokenpulse-key", key);
  }
  return key;
}
async function call(method, path, body) {
  const r = await fetch(path, {method, headers: {"X-API-Key": state.key, ...(body ? {"content-type": "application/json"} : {})},
    body: body ? JSON.stringify(body) : undefined});
  const left = r.headers.get("X-RateLimit-Remaining");
  if (left != null) $("usage").textContent = `${left}/${r.headers.get("X-RateLimit-Limit")} requests left this minute`;
  if (r.status === 401) { localStorage.removeItem("tokenpulse-key"); throw new HttpError(401, "key rejected; reload the page for a new one"); }
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error?.message || msg; } catch (_) { /* not JSON */ }
    throw new HttpError(r.status, msg);
  }
  return r.status === 204 ? null : r.json();
}
const get = (path) => call("GET", path);

// ------------------------------------------------------------------ tokens table
// A page of the universe at a time, sorted and searched by the server (/v1/tokens): 50 rows in the DOM
// whatever the universe holds, and the stream follows only the tokens on screen.
const PAGE_ROWS = 50;
const table = {sort: "-market_cap", q: "", signal: "", cursors: [null], index: 0, next: null, shown: []};
function tokenRow(t) {
  return [`<a href="#/token/${esc(t.symbol)}">${esc(t.symbol)}</a> <span class="muted">${esc(t.name)}</span>`, money(t.price), pct(t.change_24h),
    money(t.volume_24h), money(t.market_cap), grade(t.trader_grade), grade(t.investor_grade), badge(t.signal), when(t.updated_at)];
}
function renderTokens() {
  const list = table.shown.map(s => state.tokens.get(s)).filter(Boolean);
  $("tokens").querySelector("tbody").innerHTML = list.map(t =>
    `<tr data-symbol="${esc(t.symbol)}">${tokenRow(t).map(c => `<td>${c}</td>`).join("")}</tr>`).join("");
  const first = table.index * PAGE_ROWS;
  $("tokens-range").textContent = list.length ? `${first + 1}–${first + list.length}` : "no tokens match";
  $("tokens-prev").disabled = table.index === 0;
  $("tokens-next").disabled = !table.next;
  const field = table.sort.replace(/^-/, "");
  for (const th of document.querySelectorAll("#tokens th[data-sort]")) {
    if (th.dataset.sort === field) th.setAttribute("aria-sort", table.sort.startsWith("-") ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  }
  document.body.dataset.rows = String(list.length);
}
async function loadTokens() {
  const params = new URLSearchParams({limit: String(PAGE_ROWS), sort: table.sort});
  if (table.q) params.set("q", table.q);
  if (table.signal) params.set("signal", table.signal);
  if (table.cursors[table.index]) params.set("cursor", table.cursors[table.index]);
  const body = await get(`/v1/tokens?${params}`);
  table.next = body.next_cursor;
  table.shown = body.data.map(t => t.symbol);
  for (const t of body.data) state.tokens.set(t.symbol, t);
  renderTokens();
  followStream();
}
async function reloadTokens(reset) {
  if (reset) { table.cursors = [null]; table.index = 0; }
  document.body.dataset.ready = "false";
  try { await loadTokens(); document.body.dataset.ready = "true"; }
  catch (e) { $("status").innerHTML = `<span class="err">${esc(e.message)}</span>`; document.body.dataset.ready = "error"; }
}
function tableControls() {
  let typing = null;
  $("token-search").addEventListener("input", (ev) => {
    clearTimeout(typing);  // one request once the typing pauses, not one per key
    typing = setTimeout(() => { table.q = ev.target.value.trim(); reloadTokens(true); }, 250);
  });
  $("token-signal").addEventListener("change", (ev) => { table.signal = ev.target.value; reloadTokens(true); });
  $("tokens-next").addEventListener("click", () => {
    if (!table.next) return;
    table.cursors[table.index + 1] = table.next; table.index += 1; reloadTokens(false);
  });
  $("tokens-prev").addEventListener("click", () => { if (table.index > 0) { table.index -= 1; reloadTokens(false); } });
  for (const th of document.querySelectorAll("#tokens th[data-sort]")) {
    th.addEventListener("click", () => {
      const field = th.dataset.sort, current = table.sort.replace(/^-/, "");
      // a new column starts with its largest values (symbols A to Z); a second click turns it round
      table.sort = field === current ? (table.sort.startsWith("-") ? field : `-${field}`) : (field === "symbol" ? field : `-${field}`);
      reloadTokens(true);
    });
  }
}
function patchToken(symbol) {
  const t = state.tokens.get(symbol), tr = document.querySelector(`#tokens tr[data-symbol="${CSS.escape(symbol)}"]`);
  if (!t || !tr) return;
  tr.innerHTML = tokenRow(t).map(c => `<td>${c}</td>`).join("");
  tr.classList.remove("flash"); void tr.offsetWidth; tr.classList.add("flash");
}
async function fillAlertSymbols() {
  const sel = $("alert-symbol");
  if (sel.options.length) return;
  const body = await get("/v1/tokens?limit=1000&sort=symbol");
  sel.innerHTML = body.data.map(t => `<option>${esc(t.symbol)}</option>`).join("");
}

// ------------------------------------------------------------------ token page
function newChart(el, opts = {}) {
  const chart = LightweightCharts.createChart(el, {
    autoSize: true, layout: {background: {color: "#172029"}, textColor: "#8b98a5"},
    grid: {vertLines: {color: "#1f2a35"}, horzLines: {color: "#1f2a35"}},
    timeScale: {timeVisible: true, borderColor: "#26313c"}, rightPriceScale: {borderColor: "#26313c"}, ...opts});
  state.charts.push(chart);
  return chart;
}
function dropCharts() { for (const c of state.charts) c.remove(); state.charts = []; state.priceSeries = null; }

async function pageAll(path, max = 5) {
  let out = [], cursor = null, n = 0;
  do {
    const page = await get(path + (path.includes("?") ? "&" : "?") + `limit=1000${cursor ? "&cursor=" + cursor : ""}`);
    out = out.concat(page.data); cursor = page.next_cursor; n++;
  } while (cursor && n < max);
  return out;
}
async function predictionsOf(symbol, detail) {
  try { return (await get(`/v1/predictions/${encodeURIComponent(symbol)}`)).horizons || []; }
  catch (e) { if (e.status === 404) return detail.predictions || []; throw e; }
}
async function showToken(symbol) {
  dropCharts();
  const interval = $("token-interval").value;
  const since = new Date(Date.now() - ({"1d": 730, "4h": 180, "1h": 45}[interval]) * 86400e3).toISOString().slice(0, 10);
  const [detail, candles, grades, signals] = await Promise.all([
    get(`/v1/tokens/${encodeURIComponent(symbol)}`),
    pageAll(`/v1/candles/${encodeURIComponent(symbol)}?interval=${interval}&start=${since}`),
    pageAll(`/v1/grades/${encodeURIComponent(symbol)}?start=${since}`),
    get(`/v1/signals?symbol=${encodeURIComponent(symbol)}&limit=1000`).then(b => b.data)]);
  const preds = await predictionsOf(symbol, detail).catch(() => []);
  state.tokens.set(symbol, {...(state.tokens.get(symbol) || {}), ...detail});
  $("token-title").innerHTML = `${esc(detail.symbol)} <span class="muted">${esc(detail.name)}</span>`;
  renderKpis(detail);

  const chart = newChart($("price-chart"));
  const series = chart.addSeries(LightweightCharts.CandlestickSeries, {upColor: "#3fb950", downColor: "#f85149",
    borderVisible: false, wickUpColor: "#3fb950", wickDownColor: "#f85149"});
  series.setData(candles.map(c => ({time: secs(c.ts), open: c.open, high: c.high, low: c.low, close: c.close})));
  state.priceSeries = series;
  const lv = detail.levels || {};
  if (lv.key_support) series.createPriceLine({price: lv.key_support.price, color: "#3fb950", lineStyle: 2, title: "key support"});
  if (lv.breakout_level) series.createPriceLine({price: lv.breakout_level.price, color: "#f0b429", lineStyle: 2, title: "breakout"});
  const markers = signals.filter(s => s.interval === interval && candles.length && secs(s.ts) >= secs(candles[0].ts)).map(s => ({
    time: secs(s.ts), position: s.direction === "bullish" ? "belowBar" : "aboveBar", color: s.direction === "bullish" ? "#3fb950" : "#f85149",
    shape: s.direction === "bullish" ? "arrowUp" : "arrowDown", text: s.direction}));
  if (markers.length) LightweightCharts.createSeriesMarkers(series, markers);
  for (const p of preds) {
    const t0 = secs(p.made_at), t1 = secs(p.target_ts), last = candles.length ? candles[candles.length - 1].close : p.point;
    if (!(t1 > t0)) continue;
    const opts = {lastValueVisible: false, priceLineVisible: false, lineWidth: 1};
    chart.addSeries(LightweightCharts.LineSeries, {...opts, color: "#58a6ff", lineWidth: 2, title: `${p.horizon}`}).setData([{time: t0, value: last}, {time: t1, value: p.point}]);
    for (const edge of ["lower", "upper"]) chart.addSeries(LightweightCharts.LineSeries, {...opts, color: "#58a6ff80", lineStyle: 2})
      .setData([{time: t0, value: last}, {time: t1, value: p[edge]}]);
  }
  chart.timeScale().fitContent();

  const gchart = newChart($("grade-chart"), {rightPriceScale: {borderColor: "#26313c", scaleMargins: {top: 0.1, bottom: 0.1}}});
  const tg = gchart.addSeries(LightweightCharts.LineSeries, {color: "#3fb950", lineWidth: 2});
  const ig = gchart.addSeries(LightweightCharts.LineSeries, {color: "#58a6ff", lineWidth: 2});
  tg.setData(grades.filter(g => g.trader_grade != null).map(g => ({time: secs(g.ts), value: g.trader_grade})));
  ig.setData(grades.filter(g => g.investor_grade != null).map(g => ({time: secs(g.ts), value: g.investor_grade})));
  gchart.timeScale().fitContent();

  rows("roi", Object.entries(detail.roi || {}).map(([k, v]) => [k, pct(v)]));
  const levelRow = (name, l) => [name, money(l.price), l.strength?.toFixed(2) ?? "—", l.touches ?? "—"];
  rows("levels", [...(lv.resistance || []).slice().reverse().map(l => levelRow("resistance", l)), ...(lv.support || []).map(l => levelRow("support", l))]);
  rows("signals", signals.slice(-20).reverse().map(s => [when(s.ts), esc(s.interval), badge(s), s.strength.toFixed(2), esc((s.reasons || []).join(", "))]));
  rows("predictions", preds.map(p => [esc(p.horizon), when(p.target_ts).slice(0, 10), money(p.point), `${money(p.lower)} – ${money(p.upper)} (${Math.round((p.interval || 0.8) * 100)}%)`, esc(p.model)]));
  $("predictions-note").textContent = preds.length ? "" : "no predictions for this token yet";
  document.body.dataset.candles = String(candles.length);
}
function renderKpis(t) {
  $("token-kpis").innerHTML = [["price", money(t.price)], ["24h", pct(t.change_24h)], ["volume 24h", money(t.volume_24h)],
    ["trader grade", grade(t.trader_grade)], ["investor grade", grade(t.investor_grade)], ["signal", badge(t.signal)]]
    .map(([k, v]) => `<div><span class="muted">${k}</span><b>${v}</b></div>`).join("");
}

// ------------------------------------------------------------------ cycles
function cycleChart(history, cycles) {
  const svg = $("cycle-chart"), W = 1000, H = 280, pad = 40;
  const t0 = Date.parse(history[0].ts), scen = cycles.projection ? cycles.projection.scenarios : [];
  const t1 = Math.max(Date.parse(history[history.length - 1].ts), ...scen.map(s => Date.parse(s.end_date)));
  const lo = Math.log10(Math.min(...history.map(c => c.close))), hi = Math.log10(Math.max(...history.map(c => c.close), ...scen.map(s => s.btc_price_target)));
  const x = (t) => pad + (t - t0) / (t1 - t0) * (W - 2 * pad), y = (v) => H - pad - (Math.log10(v) - lo) / (hi - lo) * (H - 2 * pad);
  let s = `<polyline fill="none" stroke="#58a6ff" stroke-width="1.2" points="${history.map(c => `${x(Date.parse(c.ts)).toFixed(1)},${y(c.close).toFixed(1)}`).join(" ")}"/>`;
  for (const h of cycles.halvings) {
    const hx = x(Date.parse(h.date));
    s += `<line x1="${hx}" x2="${hx}" y1="${pad / 2}" y2="${H - pad}" stroke="#8b98a5" stroke-dasharray="4 4"/><text x="${hx + 3}" y="${pad / 2 + 10}">halving ${h.date.slice(0, 4)}</text>`;
    if (h.peak_date) s += `<circle cx="${x(Date.parse(h.peak_date))}" cy="${y(h.peak_price)}" r="4" fill="#f0b429"><title>peak ${h.peak_date} ${money(h.peak_price)}</title></circle>`;
  }
  const colors = {bear: "#f85149", base: "#f0b429", moon: "#3fb950"};
  for (const sc of scen) s += `<circle cx="${x(Date.parse(sc.end_date))}" cy="${y(sc.btc_price_target)}" r="5" fill="${colors[sc.name] || "#fff"}"><title>${sc.name}: ${money(sc.btc_price_target)} by ${sc.end_date}</title></circle><text x="${x(Date.parse(sc.end_date)) - 30}" y="${y(sc.btc_price_target) - 8}">${sc.name}</text>`;
  for (const v of [1, 10, 100, 1e3, 1e4, 1e5, 1e6]) if (Math.log10(v) >= lo && Math.log10(v) <= hi) s += `<text x="2" y="${y(v) + 4}">${money(v)}</text>`;
  svg.innerHTML = s;
}
async function showCycles() {
  const [c, history] = await Promise.all([get("/v1/cycles/btc"), pageAll("/v1/candles/BTC?interval=1d", 10)]);
  rows("halvings", c.halvings.map(h => [h.date, h.height.toLocaleString("en-US"), money(h.price),
    h.peak_date + (h.confirmed ? "" : ' <span class="muted">(so far)</span>'), money(h.peak_price),
    h.multiple == null ? "—" : h.multiple.toFixed(1) + "x", h.days_to_peak ?? "—"]));
  const p = c.projection;
  if (p) {
    $("projection-title").textContent = `Current run from ${p.start}: previous run ${p.previous_length_days} days, ${p.previous_roi.toFixed(2)}x`;
    rows("projection", p.scenarios.map(s => [s.name, s.length_multiplier, s.roi_reduction, s.end_date, money(s.btc_price_target), money(s.total_market_cap_target)]));
  }
  rows("track", c.track_record.flatMap(t => t.scenarios.map(s => [t.run, `${t.actual_peak_date} ${money(t.actual_peak_price)}`, s.name, s.end_date,
    signed(s.days_error), signed(s.price_error_pct, "%"), signed(s.market_cap_error_pct, "%")])));
  rows("alts", c.altcoin_season.map(a => [a.run, `${a.start} → ${a.end}`, a.btc_multiple.toFixed(1) + "x",
    a.altcoins.map(x => `<span class="${x.outperformed_btc ? "up" : "down"}">${esc(x.symbol)} ${x.relative_to_btc.toFixed(2)}</span>`).join(" ") || "—",
    a.not_covered.join(", ") || "—"]));
  $("cycle-notes").textContent = (c.notes || []).join(" ");
  if (history.length) cycleChart(history, c);
}

// ------------------------------------------------------------------ alerts
const describe = (c) => c.kind === "price_above" ? `price > ${money(c.value)}` : c.kind === "price_below" ? `price < ${money(c.value)}` : esc(c.kind);
async function showAlerts() {
  await fillAlertSymbols();
  try {
    const list = (await get("/v1/alerts")).data || [];
    rows("alerts", list.map(a => [esc(a.symbol), describe(a.condition || {}), esc((a.channels || []).map(c => c.type).join(", ") || "—"),
      `${a.cooldown_s ?? "—"} s`, `<span class="muted">${esc(a.id)}</span>`, `<button class="danger" data-delete="${esc(a.id)}">delete</button>`]));
    $("alerts-note").textContent = list.length ? "" : "no alerts yet";
  } catch (e) {
    rows("alerts", []);
    $("alerts-note").textContent = e.status === 404 ? "alert management is not available on this server yet" : e.message;
  }
  try {
    const events = (await get("/v1/alerts/events")).data || [];
    for (const ev of events.slice(-50)) addFired(ev, false);
  } catch (_) { /* events arrive on the stream too */ }
}
function addFired(ev, flash = true) {
  const tb = $("alert-events").querySelector("tbody"), tr = document.createElement("tr");
  tr.innerHTML = [when(ev.ts), esc(ev.symbol), money(ev.price), esc(ev.message)].map(c => `<td>${c}</td>`).join("");
  if (flash) tr.classList.add("flash");
  tb.prepend(tr);
}
async function createAlert(form) {
  const f = new FormData(form), channel = f.get("channel");
  const body = {symbol: f.get("symbol"), condition: {kind: f.get("kind"), value: Number(f.get("value"))},
    channels: channel ? [{type: channel, target: f.get("target")}] : [], cooldown_s: Number(f.get("cooldown_s") || 0)};
  try {
    const made = await call("POST", "/v1/alerts", body);
    $("alert-msg").innerHTML = `<span class="up">alert ${esc(made.id)} created</span>`;
    form.reset();
    await showAlerts();
  } catch (e) {
    $("alert-msg").innerHTML = `<span class="err">${e.status === 404 ? "alert management is not available on this server yet" : esc(e.message)}</span>`;
  }
}

// ------------------------------------------------------------------ live stream
function streamQuery() {
  // the tokens on screen only: a universe of 1,000 would otherwise send every price of every token here
  if (state.page === "token" && state.symbol) return `&symbols=${encodeURIComponent(state.symbol)}`;
  if (state.page === "tokens") return table.shown.length ? `&symbols=${encodeURIComponent(table.shown.join(","))}` : "&types=alert";
  return "&types=alert";
}
function followStream() {
  if (state.stream && state.streamQuery !== streamQuery()) { state.stream.close(); state.stream = null; connectStream(); }
}
function connectStream() {
  state.streamQuery = streamQuery();
  const es = new EventSource(`/v1/stream?api_key=${encodeURIComponent(state.key)}${state.streamQuery}`);  // EventSource cannot send headers
  state.stream = es;
  es.onopen = () => { $("live").textContent = "● live"; $("live").className = "up"; };
  es.onerror = () => {
    $("live").textContent = "reconnecting…"; $("live").className = "muted";
    // an answer that is not a stream (429: the key's streams are all open in other tabs) ends an EventSource
    if (es.readyState === EventSource.CLOSED && state.stream === es) setTimeout(() => state.stream === es && connectStream(), 10000);
  };
  es.addEventListener("price", (m) => {
    const d = JSON.parse(m.data), t = state.tokens.get(d.symbol);
    if (!t) return;
    if (t.price && t.change_24h != null) {
      const ref = t.price / (1 + t.change_24h / 100);
      t.change_24h = (d.price / ref - 1) * 100;
    }
    t.price = d.price; t.updated_at = d.ts;
    patchToken(d.symbol);
    if (state.page === "token" && state.symbol === d.symbol) renderKpis(t);
    document.body.dataset.live = String(Number(document.body.dataset.live || 0) + 1);
  });
  es.addEventListener("signal", (m) => {
    const d = JSON.parse(m.data), t = state.tokens.get(d.symbol);
    if (t && d.interval === "1d") { t.signal = {direction: d.direction, strength: d.strength, ts: d.ts}; patchToken(d.symbol); }
  });
  es.addEventListener("alert", (m) => addFired(JSON.parse(m.data)));
}

// ------------------------------------------------------------------ routing
async function route() {
  const hash = location.hash || "#/";
  if (hash.startsWith("#method-")) return;  // a report's link to its methods: the browser scrolls there
  const m = hash.match(/^#\/(token|report)\/([A-Za-z0-9]+)/);
  const named = ["cycles", "alerts", "market", "indices"].find(p => hash.startsWith(`#/${p}`));
  const page = m ? m[1] : named || "tokens";
  state.page = page; state.symbol = m ? m[2].toUpperCase() : null;
  document.body.dataset.ready = "false"; document.body.dataset.page = page;
  for (const el of document.querySelectorAll(".page")) el.classList.toggle("hidden", el.id !== `page-${page}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === page || (page === "token" && a.dataset.nav === "tokens"));
  try {
    if (page === "token") { await showToken(state.symbol); await showTokenAnalytics(state.symbol); }
    else if (page === "report") await showReport(state.symbol);
    else if (page === "market") await showMarket();
    else if (page === "indices") await showIndices();
    else if (page === "cycles") await showCycles();
    else if (page === "alerts") await showAlerts();
    else await loadTokens();
    followStream();
    $("status").textContent = `updated ${new Date().toISOString().slice(0, 19).replace("T", " ")} UTC`;
    document.body.dataset.ready = "true";
  } catch (e) {
    $("status").innerHTML = `<span class="err">${esc(e.message)}</span>`;
    document.body.dataset.ready = "error";
  }
}

(async () => {
  try {
    state.key = await apiKey();
    await loadTokens();
  } catch (e) {
    $("status").innerHTML = `<span class="err">${esc(e.message)}</span>`; document.body.dataset.ready = "error"; return;
  }
  $("alert-form").addEventListener("submit", (ev) => { ev.preventDefault(); createAlert(ev.target); });
  $("alerts").addEventListener("click", async (ev) => {
    const id = ev.target.dataset?.delete;
    if (!id) return;
    try { await call("DELETE", `/v1/alerts/${encodeURIComponent(id)}`); } catch (e) { $("alerts-note").textContent = e.message; }
    await showAlerts();
  });
  $("token-interval").addEventListener("change", () => state.symbol && route());
  $("scenario-form").addEventListener("submit", (ev) => { ev.preventDefault(); showScenarios(state.symbol, ev.target.price.value).catch(() => {}); });
  tableControls();
  window.addEventListener("hashchange", route);
  await route();
  connectStream();  // after the first route: it subscribes to what that page shows
})();
