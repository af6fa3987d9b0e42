"""Shared plotting for the benchmarks: every bench in ``make bench`` ends by writing
``docs/bench/NAME.png`` from the figures it has just measured (matplotlib, Agg backend: no display).

A figure is one or more panels side by side (or stacked): horizontal bars of named values
(:func:`bars`), grouped bars (:func:`groups`), or latency distributions as empirical CDFs with
their p50/p99 marked (:func:`cdf`). Each panel gets its own scale; values are written at the bars'
ends so the PNG reads without the Markdown table next to it.
"""

from __future__ import annotations

import math
import os
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

OUT_DIR = Path(__file__).resolve().parents[1] / "docs" / "bench"
COLORS = ["#2b7bb9", "#e08a1e", "#3a9a4a", "#c4443c", "#8a63b8", "#7f6a5b", "#d36fb8", "#7a7a7a"]


@dataclass
class Panel:
    kind: Literal["bars", "groups", "cdf"]
    title: str
    data: Any
    xlabel: str = ""
    log: bool = False
    fmt: str = "{:,.0f}"
    notes: list[str] = field(default_factory=list)


def bars(title: str, values: Mapping[str, float], xlabel: str, *, log: bool = False, fmt: str = "{:,.0f}") -> Panel:
    """One bar per name (top to bottom in the mapping's order)."""
    return Panel("bars", title, dict(values), xlabel, log, fmt)


def groups(
    title: str, values: Mapping[str, Mapping[str, float]], xlabel: str, *, log: bool = False, fmt: str = "{:,.0f}"
) -> Panel:
    """Per category (outer key) one bar per series (inner key), the series in one colour each."""
    return Panel("groups", title, {k: dict(v) for k, v in values.items()}, xlabel, log, fmt)


def cdf(title: str, samples: Mapping[str, Sequence[float]], xlabel: str = "ms", *, log: bool = True) -> Panel:
    """Empirical CDF of each sample set (e.g. latencies in ms), p50 and p99 marked."""
    return Panel("cdf", title, {k: sorted(v) for k, v in samples.items()}, xlabel, log)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def footer(extra: str = "") -> str:
    """When and where the figures were measured (and the load then: the machine may be shared)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    text = (
        f"run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load:.1f}"
    )
    return f"{text}; {extra}" if extra else text


def first_number(text: str) -> float:
    """The first number in a formatted cell, e.g. ``"28,214 (runs …)"`` → 28214.0."""
    m = re.search(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", text)
    if m is None:
        raise ValueError(f"no number in {text!r}")
    return float(m.group(0).replace(",", ""))


def _positive(values: Sequence[float]) -> bool:
    return all(v > 0 for v in values)


def _draw_bars(ax: Any, panel: Panel) -> None:
    names = list(panel.data)
    values = [float(panel.data[n]) for n in names]
    y = list(range(len(names)))[::-1]
    ax.barh(y, values, color=[COLORS[i % len(COLORS)] for i in range(len(names))])
    ax.set_yticks(y, [_wrap(n) for n in names], fontsize=8)
    if panel.log and values and _positive(values):
        ax.set_xscale("log")
    for yi, v in zip(y, values, strict=True):
        ax.text(v, yi, " " + panel.fmt.format(v), va="center", fontsize=8)
    ax.margins(x=0.25)


def _draw_groups(ax: Any, panel: Panel) -> None:
    cats = list(panel.data)
    series: list[str] = []
    for inner in panel.data.values():
        series += [s for s in inner if s not in series]
    n = max(1, len(series))
    height = 0.8 / n
    all_values = [float(v) for inner in panel.data.values() for v in inner.values()]
    for si, s in enumerate(series):
        ys, vs = [], []
        for ci, c in enumerate(cats):
            if s in panel.data[c]:
                ys.append(len(cats) - 1 - ci + 0.4 - height * (si + 0.5))
                vs.append(float(panel.data[c][s]))
        ax.barh(ys, vs, height=height * 0.95, color=COLORS[si % len(COLORS)], label=s)
        for yi, v in zip(ys, vs, strict=True):
            ax.text(v, yi, " " + panel.fmt.format(v), va="center", fontsize=7)
    ax.set_yticks(list(range(len(cats)))[::-1], [_wrap(c) for c in cats], fontsize=8)
    if panel.log and all_values and _positive(all_values):
        ax.set_xscale("log")
    ax.margins(x=0.25)
    ax.legend(fontsize=7, loc="best")


def _draw_cdf(ax: Any, panel: Panel) -> None:
    drawn = False
    for i, (name, values) in enumerate(panel.data.items()):
        if not values:
            continue
        color = COLORS[i % len(COLORS)]
        ys = [(k + 1) / len(values) for k in range(len(values))]
        p50, p99 = percentile(values, 50), percentile(values, 99)
        label = f"{name}: p50 {p50:,.1f}, p99 {p99:,.1f} (n={len(values):,})"
        ax.step(values, ys, where="post", color=color, label=label)
        ax.plot([p50, p99], [0.5, 0.99], "o", color=color, markersize=4)
        drawn = True
    if panel.log and drawn and all(v > 0 for vs in panel.data.values() for v in vs):
        ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fraction ≤ x", fontsize=8)
    ax.grid(alpha=0.3)
    if drawn:  # below the axes: the curves fill the plot
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    else:
        ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center")


def _wrap(text: str, width: int = 34) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)


def save(name: str, title: str, panels: Sequence[Panel], *, footer: str = "", columns: int | None = None) -> Path:
    """Draw ``panels`` into docs/bench/NAME.png (one row unless ``columns`` says otherwise); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    cols = columns or len(panels)
    rows = math.ceil(len(panels) / cols)
    heights = []
    for p in panels:
        n = len(p.data) * (len(next(iter(p.data.values()), {})) if p.kind == "groups" and p.data else 1)
        heights.append(3.2 + 0.2 * len(p.data) if p.kind == "cdf" else max(1.8, 0.45 * n + 1.0))
    row_h = [max(heights[r * cols : (r + 1) * cols]) for r in range(rows)]
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(6.4 * cols, sum(row_h) + 0.9),
        squeeze=False,
        gridspec_kw={"height_ratios": row_h},
    )
    for i, panel in enumerate(panels):
        ax = axes[i // cols][i % cols]
        {"bars": _draw_bars, "groups": _draw_groups, "cdf": _draw_cdf}[panel.kind](ax, panel)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.xlabel + (" (log scale)" if panel.log else ""), fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        if ax.get_xscale() == "log":  # plain numbers at the decades, none at the minor ticks (they overlap)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(title, fontsize=10)
    if footer:
        fig.text(0.01, 0.005, footer, fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03 if footer else 0, 1, 1))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"{name}.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"plot: {out}")
    return out
