"""Published schemas of the topics: JSON Schema per event and an AsyncAPI 3.0 document.

Generated from the pydantic models and the topic registry, committed under
``docs/schemas/``, and checked for drift by the test suite
(``tokenpulse schemas --check``), so downstream consumers can rely on them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenpulse_shared.topics import ALL_TOPICS, Topic

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"


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
        key = "the alert rule id" if topic.name.endswith(("alert-rules.v1", "alerts.v1")) else "the token symbol"
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
            "bindings": {"kafka": {"key": {"type": "string", "description": f"message key: {key}"}}},
        }
        channels[cid] = {
            "address": topic.name,
            "description": topic.description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "kafka": {
                    "topic": topic.name,
                    "partitions": topic.partitions,
                    "topicConfiguration": {"cleanup.policy": ["compact" if topic.compacted else "delete"]},
                }
            },
        }
        operations[f"consume_{cid}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"Subscribe to {topic.name}",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tokenpulse topics",
            "version": "1.0.0",
            "description": "Typed events on Kafka. Every event carries event_id, schema_version and produced_at; "
            "a message that fails validation goes to tokenpulse.dead-letter.v1 with the reason.",
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
