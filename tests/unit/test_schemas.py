"""The published topic schemas match the models (no drift) and describe every topic."""

from __future__ import annotations

import json

from tokenpulse_shared import schemas
from tokenpulse_shared.topics import ALL_TOPICS


def test_committed_schemas_match_the_models() -> None:
    assert schemas.drift() == [], "run `tokenpulse schemas` and commit docs/schemas"


def test_asyncapi_names_every_topic_with_its_payload() -> None:
    doc = json.loads((schemas.SCHEMA_DIR / "asyncapi.json").read_text())
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {t.name for t in ALL_TOPICS}
    tick = json.loads((schemas.SCHEMA_DIR / "tokenpulse.ticks.v1.json").read_text())
    assert {"event_id", "schema_version", "produced_at", "symbol", "price"} <= set(tick["properties"])
