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


def test_asyncapi_says_where_outside_producers_send_and_how_batches_are_placed() -> None:
    doc = json.loads((schemas.SCHEMA_DIR / "asyncapi.json").read_text())
    send = doc["operations"]["produce_tokenpulse_ticks_v1"]
    assert send["action"] == "send" and send["channel"] == {"$ref": "#/channels/tokenpulse_ticks_v1"}
    assert "one trade per message" in send["description"] and "murmur2_random" in send["description"]
    assert doc["operations"]["consume_tokenpulse_ticks_v1"]["action"] == "receive"
    batch = doc["components"]["messages"]["TickBatch"]
    assert batch["bindings"]["kafka"]["key"]["type"] == "null"
    v2 = json.loads((schemas.SCHEMA_DIR / "tokenpulse.ticks.v2.json").read_text())
    assert v2["properties"]["ts_us"]["items"]["type"] == "integer" and "source:trade_id" in v2["description"]
