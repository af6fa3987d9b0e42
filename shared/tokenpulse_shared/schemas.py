"""Published schemas of the topics: JSON Schema per event and an AsyncAPI 3.0 document.

Generated from the pydantic models and the topic registry, committed under
``docs/schemas/``, and checked for drift by the test suite
(``tokenpulse schemas --check``), so downstream consumers can rely on them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenpulse_shared.topics import ALL_TOPICS, TICKS, Topic

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"

PARTITIONING = (
    "A token's partition is the Java client's: murmur2(symbol as UTF-8) & 0x7fffffff % partitions, what the "
    "Java client, kafka-python, aiokafka and franz-go do for a message keyed by the symbol. librdkafka "
    "(confluent-kafka) defaults to consistent_random (CRC32): set partitioner=murmur2_random. A record on "
    "another partition is still counted, once: ingest moves it to the right one."
)
OUTSIDE_PRODUCERS = (
    "The input for programs outside Tokenpulse (a feed handler of your own, another team's collector): publish "
    "one trade per message in this schema, keyed by the symbol; ingest consumes it with its own feeds' "
    "tokenpulse.ticks.v2. " + PARTITIONING
)


def _key(topic: Topic) -> dict[str, Any]:
    if topic.batched:
        return {"type": "null", "description": "no key: a batch holds the rows of one partition and is sent to it"}
    what = "the alert rule id" if topic.name.endswith(("alert-rules.v1", "alerts.v1")) else "the token symbol"
    return {"type": "string", "description": f"message key: {what}"}


def _operations(topic: Topic, cid: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        f"consume_{cid}": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"Subscribe to {topic.name}",
        }
    }
    if topic is TICKS:
        out[f"consume_{cid}"]["description"] = "ingest consumes it (with tokenpulse.ticks.v2) and builds candles"
        out[f"produce_{cid}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": "Outside producers send trades here, one per message",
            "description": OUTSIDE_PRODUCERS,
        }
    return out


def message_name(topic: Topic) -> str:
    return topic.model.__name__


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema of the topic's event."""
    out = {}
    for topic in ALL_TOPICS:
        schema = topic.model.model_json_schema(mode="serialization")
        schema["$id"] = f"https://tokenpulse.dev/schemas/{topic.name}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["x-topic"] = topic.name
        out[f"{topic.name}.json"] = schema
    return out


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in ALL_TOPICS:
        cid = topic.name.replace(".", "_").replace("-", "_")
        name = message_name(topic)
        messages[name] = {
            "name": name,
            "title": name,
            "summary": topic.description,
            "contentType": "application/json",
            "payload": {"$ref": f"schemas/{topic.name}.json"},
            "headers": {
                "type": "object",
                "properties": {
                    "traceparent": {"type": "string", "description": "W3C trace context"},
                    "content-type": {"type": "string", "const": "application/json"},
                },
            },
            "bindings": {"kafka": {"key": _key(topic)}},
        }
        channels[cid] = {
            "address": topic.name,
            "description": topic.description + (f" ({PARTITIONING})" if topic.batched or topic is TICKS else ""),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "kafka": {
                    "topic": topic.name,
                    "partitions": topic.partitions,
                    "topicConfiguration": {"cleanup.policy": ["compact" if topic.compacted else "delete"]},
                }
            },
        }
        operations |= _operations(topic, cid)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tokenpulse topics",
            "version": "1.0.0",
            "description": "Typed events on Kafka. Every event carries event_id, schema_version and produced_at; "
            "a message that fails validation goes to tokenpulse.dead-letter.v1 with the reason. The v2 topics "
            "carry batches: the rows of one partition in columns, times as integers (ts_us, ts_ms); a batch is "
            "valid or not as a whole. While TOKENPULSE_PUBLISH_V1 is true (the default for one release) the "
            "v1 prices, candles and indicators are published too; tokenpulse.ticks.v1 stays for good.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def rendered() -> dict[str, str]:
    files = {name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in json_schemas().items()}
    files["asyncapi.json"] = json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n"
    return files


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (directory / name).write_text(text)
    return sorted(rendered())


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of files that differ from what the models generate (empty when up to date)."""
    out = []
    for name, text in rendered().items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            out.append(name)
    return out
