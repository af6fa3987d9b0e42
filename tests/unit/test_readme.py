"""The README stays true: its configuration table lists every setting the code reads."""

from __future__ import annotations

from pathlib import Path

from tokenpulse_shared.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [
        f"TOKENPULSE_{name.upper()}" for name in Settings.model_fields if f"`TOKENPULSE_{name.upper()}`" not in text
    ]
    assert missing == [], "add these to the README's configuration table (`tokenpulse config --markdown`)"


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text()[:1500]
    assert "make up" in head and "make test" in head
