"""Shared plotting for the benchmarks: every bench in ``make bench`` ends by writing
``docs/bench/NAME.png`` from the figures it has just measured (matplotlib, Agg backend: no display).

A figure is one or more panels side by side (or stacked): horizontal bars of named values
(:func:`bars`), grouped bars (:func:`groups`), or latency distributions as empirical CDFs with
their p50/p99 marked (:func:`cdf`). Each panel gets its own scale; values are written at the bars'
ends so the PNG reads without the Markdown table next to it.

The recorded history of every bench lives in ``docs/bench/history.csv``;
``python -m bench.plot history`` draws it to ``docs/bench/history-BENCH.png`` (:func:`plot_history`).
"""

from __future__ import annotations

import csv
import math
import os
import platform
import re
import sys
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

OUT_DIR = Path(__file__).resolve().parents[1] / "docs" / "bench"
HISTORY_CSV = OUT_DIR / "history.csv"
HISTORY_COLUMNS = ("bench", "metric", "when_utc", "value", "unit", "goal", "commit", "note")
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


# ---- history: docs/bench/history.csv over time -------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One row of history.csv: a figure of one bench run, as written in docs/benchmarks.md."""

    bench: str
    metric: str
    when_utc: str
    value: float
    unit: str
    goal: str = ""
    commit: str = ""
    note: str = ""

    @property
    def when(self) -> datetime:
        """The run's time; a run recorded only by its day sorts at the day's start."""
        fmt = "%Y-%m-%d %H:%M" if " " in self.when_utc else "%Y-%m-%d"
        return datetime.strptime(self.when_utc, fmt).replace(tzinfo=UTC)


def read_history(path: Path = HISTORY_CSV) -> list[Measurement]:
    """Every row of the history file, in file order (csv module: the notes may hold commas)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != HISTORY_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(HISTORY_COLUMNS)}")
        return [Measurement(**{**row, "value": float(row["value"])}) for row in reader]  # type: ignore[arg-type]


def parse_goal(goal: str) -> tuple[str, float] | None:
    """``">=100000"`` → ``(">=", 100000.0)``; an empty goal → None."""
    if not goal:
        return None
    m = re.fullmatch(r"(>=|<=)\s*([0-9.]+)", goal.strip())
    if m is None:
        raise ValueError(f"goal {goal!r}: expected >=N or <=N")
    return m.group(1), float(m.group(2))


RunKey = tuple[str, str]  # (when_utc, commit): before/after runs at one time get a slot each


def _run_slots(rows: Sequence[Measurement]) -> dict[RunKey, int]:
    keys = dict.fromkeys((r.when_utc, r.commit) for r in rows)
    ordered = sorted(keys, key=lambda k: next(r.when for r in rows if r.when_utc == k[0]))
    return {k: i for i, k in enumerate(ordered)}


def _run_label(key: RunKey, shared_time: bool) -> str:
    """Month-day over the time of day, and the commit under them when runs of another commit share the time."""
    day, _, clock = key[0].partition(" ")
    label = f"{day[5:]}\n{clock}" if clock else day[5:]
    return f"{label}\n{key[1][:14]}" if shared_time and key[1] else label


def _plain_number(value: float, _pos: object = None) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def _plain_y_axis(ax: Any, log: bool) -> None:
    """Numbers as people write them (no 1e6 offsets, no 10^x), decades split at 1, 2 and 5 on a log scale."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))


def _draw_history_panel(ax: Any, unit: str, rows: Sequence[Measurement], slot: Mapping[RunKey, int]) -> None:
    by_metric: dict[str, list[Measurement]] = defaultdict(list)
    for r in rows:
        by_metric[r.metric].append(r)
    goals: set[tuple[str, float]] = set()
    for i, (metric, points) in enumerate(by_metric.items()):
        points = sorted(points, key=lambda m: slot[(m.when_utc, m.commit)])
        style = "-o" if i < len(COLORS) else "--s"  # a second round of colours gets its own line style
        ax.plot(
            [slot[(p.when_utc, p.commit)] for p in points],
            [p.value for p in points],
            style,
            color=COLORS[i % len(COLORS)],
            markersize=4,
            linewidth=1.2,
            label=metric,
        )
        goal = parse_goal(points[-1].goal)
        if goal is not None:
            goals.add(goal)
    for op, value in sorted(goals):
        ax.axhline(value, color="#222", linestyle="--", linewidth=1)
        ax.annotate(
            f"goal {'≥' if op == '>=' else '≤'} {value:,g}",
            (0, value),
            xycoords=("axes fraction", "data"),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=7,
            color="#222",
        )
    if len(slot) == 1:  # a single run shows no trend: write its figures, neighbours on alternate sides
        for rank, value in enumerate(sorted(r.value for r in rows)):
            side = 1 if rank % 2 == 0 else -1
            ax.annotate(
                _plain_number(value),
                (0, value),
                xytext=(7 * side, -3),
                textcoords="offset points",
                ha="left" if side > 0 else "right",
                fontsize=7,
            )
    values = [r.value for r in rows] + [g[1] for g in goals]
    ax.margins(y=0.1)
    _plain_y_axis(ax, log=_positive(values) and max(values) / min(values) > 50)  # log for figures decades apart
    ax.set_ylabel(unit, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)


def plot_bench_history(bench: str, rows: Sequence[Measurement]) -> Path:
    """docs/bench/history-BENCH.png: a panel per unit, each metric's figures run by run, goals dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slot = _run_slots(rows)
    times = [k[0] for k in slot]
    labels = [_run_label(k, times.count(k[0]) > 1) for k in slot]
    units = list(dict.fromkeys(r.unit for r in rows))
    metrics_per_unit = [len({r.metric for r in rows if r.unit == u}) for u in units]
    heights = [3.0 + 0.22 * math.ceil(n / 2) for n in metrics_per_unit]
    fig, axes = plt.subplots(
        len(units),
        1,
        figsize=(max(7.0, 0.75 * len(slot) + 3), sum(heights) + 0.8),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, unit in zip(axes[:, 0], units, strict=True):
        _draw_history_panel(ax, unit, [r for r in rows if r.unit == unit], slot)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    fig.suptitle(f"{bench}: recorded runs (docs/bench/history.csv)", fontsize=10)
    note = (
        "x: runs in time order (UTC), not to scale. Absolute rates follow the VM's speed on the day; "
        "ratios measured within one run compare across days (docs/benchmarks.md)."
    )
    fig.text(0.01, 0.005, textwrap.fill(note, int(fig.get_figwidth() * 17)), fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out = OUT_DIR / f"history-{bench}.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"plot: {out}")
    return out


def plot_history(path: Path = HISTORY_CSV) -> list[Path]:
    """One history PNG per bench named in the file."""
    by_bench: dict[str, list[Measurement]] = defaultdict(list)
    for row in read_history(path):
        by_bench[row.bench].append(row)
    return [plot_bench_history(bench, rows) for bench, rows in by_bench.items()]


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["history"]:
        print("usage: python -m bench.plot history   (docs/bench/history.csv → docs/bench/history-BENCH.png)")
        return 2
    plot_history()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
