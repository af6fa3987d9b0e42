"""A token's research report: the platform's published numbers, assembled as Markdown (and rendered as HTML).

No invented prose: every sentence is a template filled with a number, a date or a name from the API's own
answers, and every number links to the section of "Methods" that says how it is made (and where
docs/methodology.md defines it). Dated; no advice. Markdown → HTML by markdown-it-py (CommonMark, raw HTML off,
so nothing in the data can become markup).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markdown_it import MarkdownIt

from tokenpulse_gateway.analytics.quant import Quant
from tokenpulse_gateway.analytics.scenarios import Scenarios

DISCLAIMER = (
    "This report is generated from stored market data by fixed, published methods. It describes; it does not "
    "recommend. It is not financial advice."
)
METHODS: dict[str, tuple[str, str]] = {
    "price-and-roi": (
        "Price and ROI",
        "the latest reference price; ROI compares it with the last price known at the start "
        "of each window (null when none is known near it). docs/api.md, `GET /v1/tokens/{symbol}`.",
    ),
    "grades": (
        "Grades",
        "Trader and Investor Grades (0..100) are the mean of their components, each a fixed map "
        "of one quantity onto 0..100. docs/methodology.md, Grades.",
    ),
    "signals": (
        "Signals",
        "a hysteresis state machine on the Trader Grade: bullish at 60, bearish at 40, back "
        "to neutral across 50. docs/methodology.md, Signals.",
    ),
    "track-record": (
        "Track record",
        "the daily signals followed long/flat on the stored history vs buy and "
        "hold; hit rate = the close 30 days later moved the signal's way. docs/methodology.md, "
        "Track record.",
    ),
    "key-levels": (
        "Key levels",
        "swing pivots of the last 730 daily candles clustered within 3%, weighted by "
        "recency and volume. docs/methodology.md, Key levels.",
    ),
    "predictions": (
        "Predictions",
        "the served model's point forecast and 80 % interval; backtest = its "
        "walk-forward MASE and coverage. docs/predictions.md.",
    ),
    "quant-metrics": (
        "Quant metrics",
        "daily closes of the window, simple returns, √365 annualisation, no risk-free "
        "rate. docs/methodology.md, Quant metrics.",
    ),
    "scenarios": (
        "Scenarios",
        "circulating supply = market cap / price of the latest market-cap snapshot; "
        "implied market caps, shares of the total and multiples. docs/methodology.md, Scenarios.",
    ),
}


@dataclass(frozen=True)
class ReportInputs:
    symbol: str
    name: str
    generated_at: datetime
    token: dict[str, Any]
    grade: dict[str, Any] | None
    signal: dict[str, Any] | None
    signal_record: dict[str, Any] | None
    levels: dict[str, Any]
    predictions: list[dict[str, Any]]
    quant: dict[str, Quant | str]
    scenarios: Scenarios | str
    notes: list[str] = field(default_factory=list)


def link(text: str, method: str) -> str:
    return f"[{text}](#method-{method})"


def money(v: float | None) -> str:
    if v is None:
        return "n/a"
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(v) >= size:
            return f"${v / size:,.2f}{unit}"
    return f"${v:,.2f}" if abs(v) >= 1 else f"${v:.4g}"


def pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v * 100:+.{digits}f}%"


def share(v: float | None, digits: int = 1) -> str:
    """A share or a rate (hit rate, coverage, volatility): a percentage without a sign."""
    return "n/a" if v is None else f"{v * 100:.{digits}f}%"


def num(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def price_section(i: ReportInputs) -> list[str]:
    t = i.token
    rows = [["price", link(money(t.get("price")), "price-and-roi")]]
    rows += [
        [f"ROI {k}", link(pct(None if v is None else v / 100), "price-and-roi")]
        for k, v in (t.get("roi") or {}).items()
    ]
    return ["## Price and ROI", "", f"Price as of {t.get('updated_at') or 'n/a'}.", "", *table(["", "value"], rows)]


def grades_section(i: ReportInputs) -> list[str]:
    g = i.grade
    if g is None:
        return ["## Grades", "", "No grade has been published for this token.", ""]
    head = (
        f"Trader Grade {link(num(g.get('trader_grade'), 1), 'grades')}, Investor Grade "
        f"{link(num(g.get('investor_grade'), 1), 'grades')}, on {str(g['ts'])[:10]}."
    )
    rows = [[name, link(num(v, 1), "grades")] for name, v in sorted((g.get("components") or {}).items())]
    return ["## Grades", "", head, "", *table(["component", "0..100"], rows)]


def signal_section(i: ReportInputs) -> list[str]:
    out = ["## Signal", ""]
    s = i.signal
    if s is None:
        out += ["No daily signal has been published for this token.", ""]
    else:
        reasons = ", ".join(f"`{r}`" for r in s.get("reasons") or []) or "none given"
        out += [
            f"Latest daily signal: {link(s['direction'], 'signals')}, strength {link(num(s['strength']), 'signals')}, "
            f"on {str(s['ts'])[:10]}; reasons: {reasons}.",
            "",
        ]
    r = i.signal_record
    if r is not None:
        rows = [
            ["signals", link(str(r["signals"]), "track-record")],
            ["hit rate (30 days)", link(share(r.get("hit_rate"), 0), "track-record")],
            ["following the signals", link(pct(r.get("strategy_return"), 0), "track-record")],
            ["after 0.1 % per change", link(pct(r.get("strategy_return_after_costs"), 0), "track-record")],
            ["buy and hold", link(pct(r.get("buy_and_hold_return"), 0), "track-record")],
            ["max drawdown", link(pct(r.get("max_drawdown"), 0), "track-record")],
            [
                "Sharpe / buy-and-hold Sharpe",
                link(f"{num(r.get('sharpe'))} / {num(r.get('buy_and_hold_sharpe'))}", "track-record"),
            ],
        ]
        out += ["Track record of this token's daily signals on the stored history:", "", *table(["", ""], rows)]
    return out


def levels_section(i: ReportInputs) -> list[str]:
    lv = i.levels
    rows = [
        [
            kind,
            link(money(level["price"]), "key-levels"),
            link(num(level["strength"]), "key-levels"),
            str(level["touches"]),
        ]
        for kind in ("resistance", "support")
        for level in (lv.get(kind) or [])[:3]
    ]
    key, breakout = lv.get("key_support"), lv.get("breakout_level")
    head = (
        f"Key support {link(money(key['price']) if key else 'n/a', 'key-levels')}; breakout level "
        f"{link(money(breakout['price']) if breakout else 'n/a', 'key-levels')}."
    )
    return ["## Key levels", "", head, "", *table(["level", "price", "strength", "touches"], rows)]


def predictions_section(i: ReportInputs) -> list[str]:
    if not i.predictions:
        return ["## Predictions", "", "No forecast has been published for this token.", ""]
    rows = []
    for p in i.predictions:
        b = p.get("backtest") or {}
        rows.append(
            [
                p["horizon"],
                str(p["target_ts"])[:10],
                link(money(p["point"]), "predictions"),
                link(f"{money(p['lower'])} - {money(p['upper'])}", "predictions"),
                link(
                    f"MASE {num(b.get('mase'))}, coverage {share(b.get('coverage'), 0)}, n {b.get('n')}", "predictions"
                ),
                f"`{p['model']}`",
            ]
        )
    header = ["horizon", "target", "point", "80 % interval", "backtest", "model"]
    return ["## Predictions", "", *table(header, rows)]


def quant_section(i: ReportInputs) -> list[str]:
    rows, missing = [], []
    for window, q in i.quant.items():
        if isinstance(q, str):
            missing.append(f"{window}: {q}.")
            continue
        values = [
            share(q.volatility, 0),
            num(q.sharpe),
            num(q.sortino),
            pct(q.max_drawdown, 0),
            pct(q.cagr, 0),
            num(q.beta_btc),
            num(q.corr_btc),
            str(q.n),
        ]
        rows.append([f"{window} to {q.as_of}", *(link(v, "quant-metrics") for v in values)])
    header = ["window", "volatility", "Sharpe", "Sortino", "max drawdown", "CAGR", "beta BTC", "corr BTC", "n"]
    return ["## Quant metrics", "", *table(header, rows), *missing, ""]


def scenarios_section(i: ReportInputs) -> list[str]:
    s = i.scenarios
    if isinstance(s, str):
        return ["## Scenarios", "", f"No scenarios: {s}.", ""]
    t = s.today
    head = (
        f"Circulating supply {link(f'{t.circulating_supply:,.0f}', 'scenarios')} (market-cap snapshot of "
        f"{t.supply_as_of}); market cap {link(money(t.market_cap), 'scenarios')}, "
        f"{link(share(t.share_of_total), 'scenarios')} of the total crypto market cap "
        f"({link(money(t.total_market_cap), 'scenarios')}, {t.total_market_cap_date or 'n/a'})."
    )
    rows = [
        [
            link(money(p.price), "scenarios"),
            link(money(p.market_cap), "scenarios"),
            link(share(p.share_of_total), "scenarios"),
            link(f"{p.multiple:.2f}x", "scenarios"),
        ]
        for p in s.scenarios
    ]
    cycle = [
        [
            c.name,
            str(c.end_date),
            link(money(c.total_market_cap_target), "scenarios"),
            link(money(c.price), "scenarios"),
            link(f"{c.multiple:.2f}x", "scenarios"),
        ]
        for c in s.cycle
    ]
    out = ["## Scenarios", "", head, "", *table(["price", "market cap", "share of total", "multiple"], rows)]
    if cycle:
        out += ["At today's share of the total, the halving-cycle projection's total-market-cap targets imply:", ""]
        out += table(["scenario", "by", "total market cap", "price", "multiple"], cycle)
    return out + [f"Note: {n}." for n in s.notes] + [""]


def methods_section() -> list[str]:
    out = ["## Methods", ""]
    for title, text in METHODS.values():
        out += [f"### Method: {title}", "", text[0].upper() + text[1:], ""]
    return out


def report_markdown(i: ReportInputs) -> str:
    data_day = str(i.token.get("updated_at") or "")[:10] or "n/a"
    lines = [
        f"# {i.symbol} ({i.name}): research report",
        "",
        f"Generated {i.generated_at.isoformat().replace('+00:00', 'Z')}; data up to {data_day}. {DISCLAIMER}",
        "",
        *(f"Note: {n}." for n in i.notes),
    ]
    for section in (
        price_section,
        grades_section,
        signal_section,
        levels_section,
        predictions_section,
        quant_section,
        scenarios_section,
    ):
        lines += section(i)
    return "\n".join(lines + methods_section())


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 -]", "", text.lower()).replace(" ", "-")


def _render() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def heading_ids(state: Any) -> None:  # the anchors the numbers link to
        for n, token in enumerate(state.tokens):
            if token.type == "heading_open":
                token.attrSet("id", slug(state.tokens[n + 1].content))

    md.core.ruler.push("heading_ids", heading_ids)
    return md


MARKDOWN = _render()
PAGE_CSS = """body{margin:0;background:#0f1419;color:#e6edf3;font:15px/1.5 system-ui,sans-serif}
article{max-width:960px;margin:0 auto;padding:24px}a{color:#58a6ff}h1{font-size:24px}h2{margin-top:28px}
table{border-collapse:collapse;margin:8px 0}th,td{padding:3px 10px;border-bottom:1px solid #26313c;text-align:right}
th:first-child,td:first-child{text-align:left}code{color:#8b98a5}"""
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
"""the report page: no script at all, only its own inline style"""


def report_html(markdown: str, title: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{PAGE_CSS}</style></head>'
        f'<body><article class="report">{MARKDOWN.render(markdown)}</article></body></html>'
    )
