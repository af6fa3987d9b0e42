"""The benchmark history stays in step with docs/benchmarks.md: docs/bench/history.csv parses into tidy rows, every
bench section of the page links its history plot, and every such bench has rows in the file (and no other bench)."""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "benchmarks.md"
HISTORY = ROOT / "docs" / "bench" / "history.csv"
COLUMNS = ["bench", "metric", "when_utc", "value", "unit", "goal", "commit", "note"]
HISTORY_LINK = re.compile(r"\]\(bench/history-([a-z_]+)\.png\)")


def history_rows() -> list[dict[str, str]]:
    with HISTORY.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def sections(markdown: str) -> dict[str, str]:
    """Each level-2 heading of the page with its body."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_history_has_the_expected_columns_and_typed_values() -> None:
    rows = history_rows()
    assert rows, "docs/bench/history.csv is empty"
    for n, row in enumerate(rows, start=2):
        where = f"history.csv line {n}: {row}"
        assert row["bench"] and row["metric"] and row["unit"], where
        float(row["value"])  # raises on anything but a plain number (no thousands separators)
        fmt = "%Y-%m-%d %H:%M" if " " in row["when_utc"] else "%Y-%m-%d"
        datetime.strptime(row["when_utc"], fmt)
        assert row["goal"] == "" or re.fullmatch(r"(>=|<=)[0-9.]+", row["goal"]), where


def test_every_bench_section_links_its_history_plot() -> None:
    missing = [h for h, body in sections(PAGE.read_text()).items() if not HISTORY_LINK.search(body)]
    assert missing == [], "link docs/bench/history-BENCH.png under these sections"


def test_every_bench_on_the_page_has_rows_and_a_plot_and_no_other_bench_has_rows() -> None:
    on_page = set(HISTORY_LINK.findall(PAGE.read_text()))
    in_file = {row["bench"] for row in history_rows()}
    assert on_page == in_file, f"only on the page: {on_page - in_file}; only in history.csv: {in_file - on_page}"
    unplotted = [b for b in on_page if not (ROOT / "docs" / "bench" / f"history-{b}.png").exists()]
    assert unplotted == [], "run `.venv/bin/python -m bench.plot history`"


@pytest.mark.parametrize("source", ["docs/benchmarks.md", "README.md"])
def test_links_into_the_page_name_one_of_its_headings(source: str) -> None:
    text = (ROOT / source).read_text()
    prefix = "" if source == "docs/benchmarks.md" else r"docs/benchmarks\.md"
    anchors = set(re.findall(rf"\]\({prefix}#([^)]+)\)", text))
    headings = {slug(h) for h in re.findall(r"^#+ (.+)$", PAGE.read_text(), flags=re.MULTILINE)}
    assert anchors - headings == set()
