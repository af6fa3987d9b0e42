"""Every relative link in README.md, deploy/README.md and docs/*.md resolves: files exist, #anchors name headings.

The Markdown is parsed with markdown-it-py (already installed through rich), so links inside code blocks and
code spans are not links, as on GitHub.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MD = MarkdownIt("commonmark").enable("table")


def inline_tokens(text: str) -> Iterator[tuple[Token, Token]]:
    """Each block token with the inline token that holds its text."""
    tokens = MD.parse(text)
    for block, inline in pairwise(tokens):
        if inline.type == "inline":
            yield block, inline


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings; a repeated heading gets -1, -2, ..."""
    found: set[str] = set()
    repeats: dict[str, int] = {}
    for block, inline in inline_tokens(page.read_text()):
        if block.type == "heading_open":
            text = "".join(child.content for child in inline.children or [] if child.type in ("text", "code_inline"))
            base, n = slug(text), repeats.get(slug(text), 0)
            found.add(f"{base}-{n}" if n else base)
            repeats[base] = n + 1
    return found


def relative_links(page: Path) -> Iterator[str]:
    for _, inline in inline_tokens(page.read_text()):
        for child in inline.children or []:
            href = str(child.attrs.get("href", "")) if child.type == "link_open" else ""
            if href and not urlsplit(href).scheme:
                yield href


def broken(page: Path, href: str) -> str | None:
    """Why the link does not resolve, or None."""
    path, _, anchor = href.partition("#")
    target = (page.parent / unquote(path)).resolve() if path else page
    if not target.exists():
        return f"{href}: no such file"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"{href}: no heading #{anchor} in {target.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [why for href in relative_links(page) if (why := broken(page, href))]
    assert problems == []


def test_the_checker_sees_links_and_headings() -> None:
    readme = ROOT / "README.md"
    assert "docs/api.md" in set(relative_links(readme))
    assert {"architecture", "the-two-modes", "where-to-read-next"} <= anchors(readme)
    assert broken(readme, "docs/no-such-page.md") and broken(readme, "docs/api.md#no-such-heading")
    assert broken(readme, "docs/api.md#api-this-version") is None
