// Tokenpulse dashboard, market analytics pages: market state (with quant metrics and correlations of every
// token), indices, a token's quant metrics and scenarios, and its research report. Uses dashboard.js' helpers.
"use strict";
const num = (v, d = 2) => v == null ? "—" : v.toFixed(d);
const share = (v, d = 1) => v == null ? "—" : `${(v * 100).toFixed(d)}%`;
const frac = (v, d = 1) => v == null ? "—" : `<span class="${v >= 0 ? "up" : "down"}">${v >= 0 ? "+" : ""}${(v * 100).toFixed(d)}%</span>`;
const stateBadge = (s) => s ? `<span class="badge ${esc(s)}">${esc(s)}</span>` : "—";
const kpis = (id, pairs) => { $(id).innerHTML = pairs.map(([k, v]) => `<div><span class="muted">${k}</span><b>${v}</b></div>`).join(""); };

async function getText(path, accept) {
  const r = await fetch(path, {headers: {"X-API-Key": state.key, "Accept": accept}});
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error?.message || msg; } catch (_) { /* not JSON */ }
    throw new HttpError(r.status, msg);
  }
  return r.text();
}
const orNote = (promise) => promise.catch((e) => ({error: e.message}));

// ------------------------------------------------------------------ market
async function showMarket() {
  dropCharts();
  const symbols = [...state.tokens.keys()];
  const [m, corr, ...quants] = await Promise.all([get("/v1/market?history=true"),
    orNote(get(`/v1/correlation?symbols=${symbols.join(",")}&window=90d`)),
    ...symbols.map(s => orNote(get(`/v1/quant/${encodeURIComponent(s)}?window=90d`)))]);
  kpis("market-kpis", [["state", stateBadge(m.state)], ["score", num(m.score, 1)], ["breadth", share(m.breadth)],
    ["tracked market cap", money(m.tracked_market_cap)], ["total market cap", money(m.total_market_cap)],
    ["BTC dominance", m.btc_dominance == null ? "—" : m.btc_dominance.toFixed(1) + "%"], ["as of", esc(m.as_of)]]);
  rows("market-components", Object.entries(m.components).map(([k, v]) => [esc(k), num(v, 1)]));
  rows("market-record", m.track_record.map(r => [esc(r.state), r.days, frac(r.mean_forward_return), frac(r.median_forward_return), share(r.share_positive, 0)]));
  $("market-note").textContent = `tracked: ${m.tokens.join(", ")}; total market cap snapshot of ${m.total_market_cap_date || "—"}`;
  const chart = newChart($("market-chart"), {rightPriceScale: {borderColor: "#26313c", scaleMargins: {top: 0.1, bottom: 0.1}}});
  chart.addSeries(LightweightCharts.LineSeries, {color: "#58a6ff", lineWidth: 1}).setData(
    m.history.filter(d => d.score != null).map(d => ({time: d.date, value: d.score})));
  chart.timeScale().fitContent();
  rows("quant-all", quants.map((q, i) => q.error ? [esc(symbols[i]), `<span class="muted">${esc(q.error)}</span>`, "", "", "", "", "", ""]
    : [`<a href="#/token/${esc(q.symbol)}">${esc(q.symbol)}</a>`, share(q.volatility, 0), num(q.sharpe), num(q.sortino), frac(q.max_drawdown, 0), frac(q.cagr, 0), num(q.beta_btc), num(q.corr_btc)]));
  if (corr.error) { $("correlation").innerHTML = `<tr><td class="muted">${esc(corr.error)}</td></tr>`; return; }
  $("correlation").innerHTML = `<thead><tr><th>90d, to ${esc(corr.as_of)}</th>${corr.symbols.map(s => `<th>${esc(s)}</th>`).join("")}</tr></thead><tbody>` +
    corr.matrix.map((row, i) => `<tr><td>${esc(corr.symbols[i])}</td>${row.map(v => `<td>${num(v)}</td>`).join("")}</tr>`).join("") + "</tbody>";
}

// ------------------------------------------------------------------ indices
async function showIndices() {
  dropCharts();
  const list = (await get("/v1/indices")).data;
  const stat = (st) => st ? `${frac(st.total_return, 0)} · vol ${share(st.volatility, 0)} · dd ${frac(st.max_drawdown, 0)}` : "—";
  rows("indices", list.map(i => [esc(i.name), esc(i.rules), esc(i.start), num(i.nav, 1), stat(i.stats.index), stat(i.stats.btc), stat(i.stats.equal_weight),
    esc(i.constituents.map(c => `${c.symbol} ${(c.weight * 100).toFixed(0)}%`).join(", ") || "cash")]));
  const holder = $("index-charts");
  holder.innerHTML = list.map((i, n) => `<h3>${esc(i.name)}: NAV (log scale) vs BTC and the equal-weight basket</h3><div id="index-chart-${n}" class="chart small"></div>`).join("");
  const details = await Promise.all(list.map(i => get(`/v1/indices/${encodeURIComponent(i.id)}`)));
  details.forEach((d, n) => {
    const chart = newChart($(`index-chart-${n}`), {rightPriceScale: {borderColor: "#26313c", mode: 1}});
    const line = (key, color) => chart.addSeries(LightweightCharts.LineSeries, {color, lineWidth: 1, title: key})
      .setData(d.history.filter(p => p[key] != null).map(p => ({time: p.date, value: p[key]})));
    line("nav", "#58a6ff"); line("btc", "#f0b429"); line("equal_weight", "#8b98a5");
    chart.timeScale().fitContent();
  });
}

// ------------------------------------------------------------------ a token's quant metrics and scenarios
async function showTokenAnalytics(symbol) {
  const s = encodeURIComponent(symbol);
  $("report-link").href = `#/report/${s}`;
  const quants = await Promise.all(["30d", "90d", "365d"].map(w => orNote(get(`/v1/quant/${s}?window=${w}`).then(q => ({...q, w})))));
  rows("quant", quants.map(q => q.error ? [`<span class="muted">${esc(q.error)}</span>`, "", "", "", "", "", "", ""]
    : [esc(q.window), share(q.volatility, 0), num(q.sharpe), num(q.sortino), frac(q.max_drawdown, 0), frac(q.cagr, 0), num(q.beta_btc), num(q.corr_btc)]));
  await showScenarios(symbol);
}
async function showScenarios(symbol, price) {
  const query = price ? `?price=${encodeURIComponent(price)}` : "";
  const sc = await orNote(get(`/v1/scenarios/${encodeURIComponent(symbol)}${query}`));
  if (sc.error) { $("scenarios-note").textContent = sc.error; rows("scenarios", []); return; }
  const t = sc.today;
  rows("scenarios", [...sc.scenarios.map(p => ["price", money(p.price), money(p.market_cap), share(p.share_of_total), `${p.multiple.toFixed(2)}x`]),
    ...sc.cycle.map(c => [`cycle ${esc(c.name)} (${esc(c.end_date)})`, money(c.price), money(c.market_cap), `of ${money(c.total_market_cap_target)}`, `${c.multiple.toFixed(2)}x`])]);
  const need = sc.requirement;
  $("scenarios-note").textContent = `supply ${Math.round(t.circulating_supply).toLocaleString("en-US")} (market cap / price, ${t.supply_as_of}); ` +
    (need ? `${money(need.price)} needs a market cap of ${money(need.market_cap)}: ${share(need.share_of_current_total)} of today's total, or a total of ${money(need.total_market_cap_at_current_share)} at today's share. ` : "") +
    sc.notes.join("; ");
}

// ------------------------------------------------------------------ research report
async function showReport(symbol) {
  const html = await getText(`/v1/reports/${encodeURIComponent(symbol)}`, "text/html");
  const article = new DOMParser().parseFromString(html, "text/html").querySelector("article");
  $("report-body").replaceChildren(document.importNode(article, true));
}
