"""The README and docs stay true: the configuration table lists every setting, the snippets run."""

from __future__ import annotations

from pathlib import Path

from tokenpulse_shared.settings import variables

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ALERTS = ROOT / "docs" / "alerts.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_every_setting_is_documented_in_the_configuration_table() -> None:
    text = CONFIGURATION.read_text()
    missing = [v.name for v in variables() if f"`{v.name}`" not in text]
    assert missing == [], "add these to docs/configuration.md (`tokenpulse config --markdown`)"


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text()[:1500]
    assert "make up" in head and "make test" in head


def test_the_alerts_docs_webhook_verification_snippet_accepts_our_signature_and_nothing_else() -> None:
    import re
    import time

    from tokenpulse_shared.channels import sign, webhook_secret

    blocks = re.findall(r"```python\n(.*?)```", ALERTS.read_text(), re.S)
    snippet = next(b for b in blocks if "def verify(" in b)
    scope: dict[str, object] = {}
    exec(snippet, scope)
    verify = scope["verify"]
    secret = webhook_secret("a-signing-key", "9f2c41d07a5be613")
    body, now = b'{"type":"alert","alerts":[]}', int(time.time())
    header = sign(secret, now, body)
    assert verify(secret, header, body)  # type: ignore[operator]
    assert not verify(secret, header, body + b" ")  # type: ignore[operator]
    assert not verify(webhook_secret("a-signing-key", "another-key-id"), header, body)  # type: ignore[operator]
    assert not verify(secret, sign(secret, now - 3600, body), body)  # type: ignore[operator]
