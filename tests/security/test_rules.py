"""Alert rules can never brick the platform.

A condition nested 120 or 254 levels deep, and request bodies nested 30,000 levels deep, are refused with
a 4xx in the error shape (they used to be stored, then answered 500 to their owner and stopped the next
start). A rule row the current code cannot read (as an older version left it) is quarantined at start:
the server is ready, ``/readyz`` counts it, a dead letter records it, and its owner lists and deletes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tokenpulse_shared.events import MAX_CONDITION_DEPTH

from tests.security.conftest import ADMIN, LoopProbe, UpServer

pytestmark = pytest.mark.e2e

LEAF = '{"kind":"price_above","value":1e6}'


def nested_condition(levels: int) -> str:
    """A condition of ``levels`` levels (a single check is one), as JSON text: no encoder recursion."""
    return '{"kind":"all","all":[' * (levels - 1) + LEAF + "]}" * (levels - 1)


def rule_body(levels: int) -> bytes:
    return ('{"symbol":"BTC","name":"deep","condition":' + nested_condition(levels) + "}").encode()


def post_json(up: UpServer, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    headers = {**headers, "content-type": "application/json"}
    return httpx.post(f"{up.base}{path}", content=body, headers=headers, timeout=30)


def assert_refused(r: httpx.Response, *words: str) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert set(error) == {"code", "message"} and isinstance(error["code"], str), r.text[:300]
    assert all(w in error["message"] for w in words), error


def test_deep_conditions_and_bodies_are_refused_and_a_restart_comes_back(server: UpServer) -> None:
    key = {"X-API-Key": server.key()}
    with LoopProbe(server.base) as probe:
        # one level too many is the condition's refusal; 120 and 254 levels are a body too deep to parse
        for levels, words in ((MAX_CONDITION_DEPTH + 1, "condition"), (120, "request body"), (254, "request body")):
            r = post_json(server, "/v1/alerts", rule_body(levels), key)
            assert_refused(r, words, "nest")
        deepest = post_json(server, "/v1/alerts", rule_body(MAX_CONDITION_DEPTH), key)
        assert deepest.status_code == 201, deepest.text
        raw = b'{"name":' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # ~60 KB: under the body limit
        for path, headers in (("/v1/alerts", key), ("/v1/keys", {}), ("/v1/admin/keys", {"X-Admin-Token": ADMIN})):
            assert_refused(post_json(server, path, raw, headers), "request body nests deeper")
    assert probe.worst_s < 1.0
    listed = httpx.get(f"{server.base}/v1/alerts", headers=key, timeout=30)
    assert listed.status_code == 200 and [r["id"] for r in listed.json()["data"]] == [deepest.json()["id"]]
    server.restart()
    again = httpx.get(f"{server.base}/v1/alerts/{deepest.json()['id']}", headers=key, timeout=30)
    assert again.status_code == 200 and again.json()["condition"] == json.loads(nested_condition(MAX_CONDITION_DEPTH))


# ---- a record the current code cannot read, written straight into the store -----------------------

STORE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import datetime
    from tokenpulse_shared.store import Store

    async def main(path, task):
        store = await Store("chdb://" + path).open(migrate=False)
        try:
            if task["op"] == "insert":
                rows = task["rows"]
                columns = [[row[c] for row in rows] for c in task["columns"]]
                for i, c in enumerate(task["columns"]):
                    if c == "created_at":
                        columns[i] = [datetime.fromisoformat(v) for v in columns[i]]
                await store.insert(task["table"], columns, task["columns"])
            else:
                print(json.dumps(await store.query(task["sql"]), default=str))
        finally:
            await store.close()

    asyncio.run(main(sys.argv[1], json.load(sys.stdin)))
    """
)


def store_task(up: UpServer, task: dict[str, Any]) -> Any:
    """Run one insert or query on a stopped server's chDB store, in a process of its own (one engine each)."""
    path = str((up.root / "data" / "clickhouse").resolve())
    out = subprocess.run(
        [sys.executable, "-c", STORE_SCRIPT, path], input=json.dumps(task), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout) if task["op"] == "query" else None


def old_rule_row(rule_id: str, owner: str, text: str) -> dict[str, Any]:
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    return {"rule_id": rule_id, "owner": owner, "symbol": "BTC", "rule": text, "created_at": now, "deleted": 0}


def deep_rule_text(rule_id: str, owner: str, levels: int) -> str:
    """A rule as an older version stored it, its condition ``levels`` deep (json.dumps copes at this depth)."""
    rule = {
        "event_id": "0" * 32,
        "schema_version": 1,
        "produced_at": "2026-01-01T00:00:00Z",
        "rule_id": rule_id,
        "owner": owner,
        "symbol": "BTC",
        "condition": json.loads(nested_condition(levels)),
        "channels": [],
        "cooldown_s": 300,
        "name": "from an older version",
        "created_at": "2026-01-01T00:00:00Z",
        "deleted": False,
    }
    return json.dumps(rule)


def test_an_unreadable_stored_rule_is_quarantined_and_its_owner_deletes_it(up_server: Any) -> None:
    up = up_server()
    created = httpx.post(f"{up.base}/v1/keys", json={"name": "owner"}, timeout=10).json()
    key, owner = {"X-API-Key": created["key"]}, created["key_id"]
    good = post_json(up, "/v1/alerts", rule_body(2), key).json()["id"]
    deep_text = deep_rule_text("rule_olddeep", owner, 120)
    rows = [old_rule_row("rule_olddeep", owner, deep_text), old_rule_row("rule_oldjunk", owner, '{"rule_id": "x"')]
    up.stop()
    columns = ["rule_id", "owner", "symbol", "rule", "created_at", "deleted"]
    store_task(
        up,
        {
            "op": "insert",
            "table": "alert_rules",
            "columns": [*columns, "version"],
            "rows": [{**row, "version": 1} for row in rows],
        },
    )

    up.start()  # used to die in AlertsService.restore()
    ready = httpx.get(f"{up.base}/readyz", timeout=10).json()
    assert ready["ready"] is True and ready["quarantined_rules"] == 2 and ready["alert_rules"] == "1"
    listed = {r["id"]: r for r in httpx.get(f"{up.base}/v1/alerts", headers=key, timeout=10).json()["data"]}
    assert set(listed) == {good, "rule_olddeep", "rule_oldjunk"} and listed[good]["readable"] is True
    for rule_id in ("rule_olddeep", "rule_oldjunk"):
        entry = httpx.get(f"{up.base}/v1/alerts/{rule_id}", headers=key, timeout=10).json()
        assert entry == listed[rule_id] and entry["readable"] is False and entry["symbol"] == "BTC"
        assert "delete it" in entry["error"]
        gone = httpx.delete(f"{up.base}/v1/alerts/{rule_id}", headers=key, timeout=10)
        assert gone.status_code == 200 and gone.json() == {"id": rule_id, "deleted": True}
        assert httpx.get(f"{up.base}/v1/alerts/{rule_id}", headers=key, timeout=10).status_code == 404
    lines = [line for line in up.logs().splitlines() if "quarantined rule rule_olddeep" in line]
    assert len(lines) == 1 and "recursion limit" in lines[0]

    up.restart()
    ready = httpx.get(f"{up.base}/readyz", timeout=10).json()
    assert ready["quarantined_rules"] == 0 and ready["alert_rules"] == "1"
    assert [r["id"] for r in httpx.get(f"{up.base}/v1/alerts", headers=key, timeout=10).json()["data"]] == [good]
    up.stop()
    dead = store_task(
        up,
        {
            "op": "query",
            "sql": "SELECT msg_key, reason, payload, consumer FROM dead_letters "
            "WHERE topic = 'tokenpulse.alert-rules.v1' ORDER BY msg_key",
        },
    )
    assert sorted({(d[0], d[3]) for d in dead}) == [("rule_olddeep", "alerts"), ("rule_oldjunk", "alerts")]
    deep_letter = next(d for d in dead if d[0] == "rule_olddeep")
    assert deep_letter[1].startswith("quarantined at start:") and deep_letter[2] == deep_text
