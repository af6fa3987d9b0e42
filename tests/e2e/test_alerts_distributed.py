"""Alerts end to end over the real broker, with the alerts service killed (SIGKILL) and restarted.

Rules are created through the gateway's API (webhook and e-mail channels); reference prices — real
BTC one-minute closes around its first crossing of 100,000 — are published on the prices topic. The
expected firings are computed here independently from the price path and the rule levels; the local
webhook receiver (which verifies every signature) and the SMTP server must receive each of them
exactly once, with the right content, although the alerts process is killed mid-stream while
prices keep flowing and a new one takes over from the committed offsets.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tokenpulse_alerts.rules import firing_id
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import Interval, PriceEvent
from tokenpulse_shared.settings import DEFAULT_BUNDLE
from tokenpulse_shared.topics import PRICES

from testkit.procs import Proc, api_key, distributed_env, free_port, wait_until
from testkit.receivers import HttpReceiver, SmtpReceiver, verify_signature

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

START = datetime(2024, 12, 5, tzinfo=UTC)
SIGNING_KEY = "e2e-signing-key"


def closes(hours: int) -> list[tuple[datetime, float]]:
    start_ms = int(START.timestamp() * 1000)
    end_ms = int((START + timedelta(hours=hours)).timestamp() * 1000)
    bars = next(b for _, _, b in iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.M1], start_ms, end_ms))
    return [(datetime.fromtimestamp(b.ts_ms / 1000, UTC), b.close) for b in bars]


def price_events(symbol: str, path: list[tuple[datetime, float]], prev: float | None) -> list[PriceEvent]:
    out = []
    for ts, p in path:
        out.append(PriceEvent(symbol=symbol, ts=ts, price=p, prev_price=prev, sources=["e2e"]))
        prev = p
    return out


async def publish(bootstrap: str, events: list[PriceEvent], per_second: float | None = None) -> None:
    bus = KafkaBus(bootstrap, client_id="e2e-prices")
    await bus.start()
    try:
        step = 20
        for i in range(0, len(events), step):
            await bus.publish(PRICES, events[i : i + step])
            if per_second:
                await asyncio.sleep(step / per_second)
    finally:
        await bus.stop()


def expected(events: list[PriceEvent], rules: dict[str, tuple[str, float]]) -> set[str]:
    """Independent reference: an edge when the previous and the new price straddle a level."""
    out = set()
    for e in events:
        if e.prev_price is None:
            continue
        for rule_id, (kind, level) in rules.items():
            if (kind == "price_above" and e.prev_price <= level < e.price) or (
                kind == "price_below" and e.price < level <= e.prev_price
            ):
                out.add(firing_id(rule_id, e.event_id))
    return out


def test_every_firing_is_delivered_once_across_a_kill_and_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sym = "A" + uuid.uuid4().hex[:7].upper()
    with HttpReceiver() as hooks, SmtpReceiver() as smtp:
        env = distributed_env(
            kafka_bootstrap,
            f"e2e-{uuid.uuid4().hex[:8]}",
            tmp_path / "gateway",
            sym,
            port=str(port),
            webhook_allowlist="127.0.0.1",
            alerts_signing_key=SIGNING_KEY,
            smtp_url=smtp.url,
            delivery_backoff_s="0.2",
            max_rules_per_key="50",
        )
        gateway = Proc(["run", "gateway"], env, tmp_path / "gateway.log")
        alerts = Proc(["run", "alerts"], env, tmp_path / "alerts-1.log")
        procs = [gateway, alerts]
        try:
            wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 120, "gateway", procs)
            key = api_key(base)
            headers = {"X-API-Key": key}
            path = closes(12)
            lo, hi = min(p for _, p in path), max(p for _, p in path)
            levels = [round(lo + (hi - lo) * f, 2) for f in (0.15, 0.35, 0.5, 0.65, 0.85)]
            rules: dict[str, tuple[str, float]] = {}
            secret = ""
            for level in levels:
                for kind in ("price_above", "price_below"):
                    body = {
                        "symbol": sym,
                        "name": f"{kind} {level}",
                        "condition": {"kind": kind, "value": level},
                        "channels": [{"type": "webhook", "target": f"{hooks.url}/hook"}],
                        "cooldown_s": 0,
                    }
                    r = httpx.post(f"{base}/v1/alerts", json=body, headers=headers, timeout=10)
                    assert r.status_code == 201, r.text
                    rules[r.json()["id"]] = (kind, level)
                    secret = r.json()["webhook_secret"]
            mail_rule = httpx.post(
                f"{base}/v1/alerts",
                json={
                    "symbol": sym,
                    "name": "mail me",
                    "condition": {"kind": "price_above", "value": levels[2]},
                    "channels": [{"type": "email", "target": "ops@example.com"}],
                    "cooldown_s": 86400,
                },
                headers=headers,
                timeout=10,
            ).json()

            # three segments: crossings, a flat stretch (prices flow, nothing crosses), crossings again
            half = len(path) // 2
            first = price_events(sym, path[:half], None)
            flat_at = first[-1].price
            flat = price_events(sym, [(first[-1].ts + timedelta(seconds=i + 1), flat_at) for i in range(600)], flat_at)
            second = price_events(sym, path[half:], flat_at)
            want = expected(first + flat + second, rules)
            want_first = expected(first, rules)
            assert len(want_first) >= 10 and len(want) > len(want_first)  # the slice really crosses the levels

            def delivered() -> list[str]:
                ids: list[str] = []
                for req in hooks.received("/hook"):
                    assert verify_signature(secret, req.headers["X-Tokenpulse-Signature"], req.body)
                    ids += [a["firing_id"] for a in req.json()["alerts"]]
                return ids

            time.sleep(2)  # the alerts service follows the rules topic
            asyncio.run(publish(kafka_bootstrap, first))
            wait_until(lambda: len(delivered()) >= len(want_first), 60, "the first segment's deliveries", procs)
            time.sleep(1.5)  # outcomes published

            async def flat_then_kill() -> None:
                feeder = asyncio.create_task(publish(kafka_bootstrap, flat, per_second=100))
                await asyncio.sleep(2.0)
                alerts.p.kill()  # SIGKILL mid-stream: uncommitted prices are redelivered to the next process
                alerts.p.wait()
                await feeder

            asyncio.run(flat_then_kill())
            alerts.stop()
            restarted = Proc(["run", "alerts"], env, tmp_path / "alerts-2.log")
            procs = [gateway, restarted]
            asyncio.run(publish(kafka_bootstrap, second))
            wait_until(lambda: len(delivered()) >= len(want), 90, "every delivery", procs)
            time.sleep(2)  # anything duplicated would arrive now

            got = delivered()
            assert len(got) == len(set(got)), "a notification was delivered twice"
            assert set(got) == want

            # the e-mail rule fired once (a day's cooldown) and its mail arrived once (a delivery cut by the
            # kill resumes in the restarted process; on a loaded machine that can come after the webhooks)
            wait_until(lambda: any(m[1] == ["ops@example.com"] for m in smtp.messages), 60, "the e-mail", procs)
            time.sleep(2)  # a duplicate would arrive now
            mails = [m for m in smtp.messages if m[1] == ["ops@example.com"]]
            assert len(mails) == 1 and b"mail me" in mails[0][2] and sym.encode() in mails[0][2]

            # the delivery log in the API says the same
            def log() -> list[dict[str, object]]:
                out: list[dict[str, object]] = []
                cursor = None
                while True:
                    params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                    page = httpx.get(f"{base}/v1/alerts/events", params=params, headers=headers, timeout=10).json()
                    out += page["data"]
                    cursor = page["next_cursor"]
                    if not cursor:
                        return out

            wait_until(
                lambda: len([e for e in log() if e["status"] == "delivered"]) == len(want) + 1,
                60,
                "the delivery log",
                procs,
            )
            entries = log()
            assert {e["id"] for e in entries if e["rule_id"] != mail_rule["id"]} == want
            assert all(json.dumps(e["deliveries"]).count('"delivered"') >= 1 for e in entries)
        finally:
            codes = {p.log.name: p.stop() for p in procs}
    assert all(code == 0 for code in codes.values()), codes
