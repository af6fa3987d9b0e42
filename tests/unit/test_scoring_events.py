"""The scoring service's output events: built without re-validation, yet equal to validated ones;
intraday signals; never a non-finite number."""

from __future__ import annotations

import asyncio
import gc
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from tokenpulse_ingest.bundle import bar_to_event, iter_bundle
from tokenpulse_scoring.service import ScoringService, output_key
from tokenpulse_shared.batches import INDICATOR_NAMES, CandleBatch, IndicatorBatch
from tokenpulse_shared.bus import TransientError
from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.topics import GRADES, INDICATORS, INDICATORS_V2, SIGNALS, Topic


def test_trusted_events_equal_validated_ones_and_round_trip_as_json() -> None:
    (_, _, bars), (_, _, hours) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.H4, Interval.D1])
    candles = [bar_to_event("BTC", Interval.D1, b) for b in bars[:800]] + [
        bar_to_event("BTC", Interval.H4, b) for b in hours[:3000]
    ]
    indicators, grades, signals = ScoringService()._process(candles)
    assert len(indicators) == len(candles) and grades and signals
    assert {s.interval for s in signals} == {Interval.D1, Interval.H4}
    for event in [*indicators[::97], *grades[::31], *signals]:
        validated = type(event).model_validate(event.model_dump())
        assert validated == event
        assert type(event).model_validate_json(event.model_dump_json()) == event
    assert len({e.event_id for e in indicators}) == len(indicators)


def test_absurd_prices_never_give_a_non_finite_output() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    candles = []
    for i in range(60):
        p = 1e-300 if i % 2 else 1e300  # validated as finite and positive, but squares overflow
        ts = t0.replace(day=1 + i % 28, month=1 + i // 28)
        candles.append(CandleEvent(symbol="X", interval=Interval.D1, ts=ts, open=p, high=p, low=p, close=p, volume=1))
    indicators, grades, _ = ScoringService()._process(candles)
    for e in indicators:
        for name in ("rsi_14", "macd", "ema_20", "sma_200", "bb_upper", "atr_14"):
            v = getattr(e, name)
            assert v is None or math.isfinite(v)
    for g in grades:
        for v in (g.trader_grade, g.investor_grade, *g.components.values()):
            assert v is None or math.isfinite(v)


def _ids(outputs: tuple[list[Any], ...]) -> list[str]:
    return [e.event_id for events in outputs for e in events]


def test_output_event_ids_are_derived_from_the_candle_so_a_restart_republishes_the_same_ids() -> None:
    (_, _, bars), (_, _, hours) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.H4, Interval.D1])
    candles = [bar_to_event("BTC", Interval.D1, b) for b in bars[:900]] + [
        bar_to_event("BTC", Interval.H4, b) for b in hours[:900]
    ]
    first = ScoringService()._process(candles)
    ids = _ids(first)
    assert len(set(ids)) == len(ids)  # unique across indicators, grades and signals
    indicators, grades, signals = first
    assert grades and signals
    c = candles[500]
    assert indicators[500].event_id == f"ind-BTC-1d-{int(c.ts.timestamp() * 1000)}-{c.version}"
    assert {g.event_id.split("-", 1)[0] for g in grades} == {"grade"}
    assert {s.event_id.split("-", 1)[0] for s in signals} == {"sig"}

    # another process (a restart) scoring the same candles: the same ids, event for event
    assert _ids(ScoringService()._process(candles)) == ids
    # a process that had the first 600 daily candles (rebuilt state) and gets the rest redelivered, in
    # other batches: the same ids for what it publishes
    restarted = ScoringService()
    restarted._process(candles[:600])
    again = [e for b in range(600, len(candles), 77) for e in _ids(restarted._process(candles[b : b + 77]))]
    published_before = set(_ids(ScoringService()._process(candles[:600])))
    assert len(again) == len(set(again))
    assert set(again) == set(ids) - published_before


def test_a_late_correction_gives_new_ids_to_the_outputs_it_recomputes_and_only_to_those() -> None:
    ((_, _, bars),) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1])
    candles = [bar_to_event("BTC", Interval.D1, b) for b in bars[:700]]
    original = ScoringService()
    before = set(_ids(original._process(candles)))
    old = candles[650]
    fix = old.model_copy(update={"close": old.close * 1.2, "high": max(old.high, old.close * 1.2), "version": 7})
    ts_ms = int(old.ts.timestamp() * 1000)
    recomputed = original._process([fix])
    assert len(recomputed[0]) == 50  # the corrected candle and the 49 after it
    assert recomputed[0][0].event_id == f"ind-BTC-1d-{ts_ms}-7"  # the new version: a new id
    later = [i for i in _ids(recomputed) if f"-1d-{ts_ms}-7" not in i]  # the outputs of the candles after it
    assert len(later) >= 49 and all(i.endswith(f"-r{ts_ms}.7") or i.endswith(f"-r{ts_ms}.7-retracted") for i in later)
    assert not before & set(_ids(recomputed))  # new values, new ids: none taken for a redelivered copy

    # the same correction applied by a process restarted before it (state rebuilt from the 700 candles)
    restarted = ScoringService()
    restarted._process(candles)
    assert _ids(restarted._process([fix])) == _ids(recomputed)
    # and once more (a redelivery): nothing new is published
    assert _ids(restarted._process([fix])) == []


def _rows(candles: list[CandleEvent], size: int) -> list[CandleBatch]:
    return [CandleBatch.from_events(candles[k : k + size]) for k in range(0, len(candles), size)]


def _fields(events: list[Any]) -> list[dict[str, Any]]:
    """The events' fields but ``produced_at`` (a clock read per batch)."""
    return [{k: v for k, v in e.model_dump().items() if k != "produced_at"} for e in events]


def test_candle_rows_are_scored_as_the_arithmetic_says_and_as_candle_events_are() -> None:
    """``score_rows`` (candles.v2) builds its indicator columns straight from ``apply_batch``'s updates: each row
    holds the update's values under their own names and the id of ``output_key``; and its outputs are exactly
    those of the same candles scored as v1 events, a late correction included."""
    (_, _, bars), (_, _, hours) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.H4, Interval.D1])
    candles = [bar_to_event("BTC", Interval.D1, b) for b in bars[:700]] + [
        bar_to_event("BTC", Interval.H4, b) for b in hours[:1500]
    ]
    old = candles[650]
    fix = old.model_copy(update={"close": old.close * 1.2, "high": max(old.high, old.close * 1.2), "version": 7})
    rows, events, reference = ScoringService(), ScoringService(), ScoringService()

    expected = []
    for interval, part in ((Interval.D1, candles[:700]), (Interval.H4, candles[700:])):
        entries = [(int(c.ts.timestamp() * 1000), c.open, c.high, c.low, c.close, c.volume, c.version) for c in part]
        expected += [
            (e, u)
            for k in range(0, len(entries), 333)
            for e, u in reference.apply_batch("BTC", interval, entries[k : k + 333])
        ]
    chunks = [candles[k : k + 333] for k in range(0, len(candles), 333)]
    got = [rows.score_rows(_rows(chunk, 333)) for chunk in chunks]
    batch = IndicatorBatch.of_columns(IndicatorBatch.concat([o.indicators for o in got if o.indicators]))
    assert len(batch) == len(expected) == len(candles)
    for i, (entry, update) in enumerate(expected):
        assert batch.row_id[i] == "ind-" + output_key("BTC", batch.interval[i], entry[0], entry[6], update.basis)
        assert batch.ts_ms[i] == entry[0] and batch.candle_version[i] == entry[6]
        assert {name: getattr(batch, name)[i] for name in INDICATOR_NAMES} == update.indicators

    assert {e.event_id for o in got for e in o.signals}  # the comparison below covers signals too
    for rows_out, events_out in [
        *zip(got, (events._process(chunk) for chunk in chunks), strict=True),
        (rows.score_rows(_rows([fix], 1)), events._process([fix])),  # a late correction: 50 candles recomputed
    ]:
        assert rows_out.indicators is not None
        assert _fields(rows_out.indicators.to_events()) == _fields(events_out[0])
        assert _fields(rows_out.grades) == _fields(events_out[1])
        assert _fields(rows_out.signals) == _fields(events_out[2])


def test_candle_rows_with_absurd_prices_never_give_a_non_finite_indicator() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    candles = []
    for i in range(60):
        p = 1e-300 if i % 2 else 1e300
        ts = t0.replace(day=1 + i % 28, month=1 + i // 28)
        candles.append(CandleEvent(symbol="X", interval=Interval.D1, ts=ts, open=p, high=p, low=p, close=p, volume=1))
    out = ScoringService().score_rows(_rows(candles, 60))
    assert out.indicators is not None
    values = [v for name in INDICATOR_NAMES for v in getattr(out.indicators, name)]
    assert any(v is not None for v in values) and all(v is None or math.isfinite(v) for v in values)


def test_the_garbage_collector_is_paused_while_a_batch_is_scored_and_resumed_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = ScoringService()
    during: list[bool] = []
    apply_batch = service.apply_batch

    def spy(*args: Any) -> Any:
        during.append(gc.isenabled())
        return apply_batch(*args)

    monkeypatch.setattr(service, "apply_batch", spy)
    ((_, _, bars),) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1])
    service.score_rows(_rows([bar_to_event("BTC", Interval.D1, b) for b in bars[:50]], 50))
    assert during == [False]
    assert gc.isenabled()


def test_only_closed_candle_rows_are_scored() -> None:
    ((_, _, bars),) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1])
    candles = [bar_to_event("BTC", Interval.D1, b) for b in bars[:40]]
    candles[-1] = candles[-1].model_copy(update={"closed": False})  # the day still running
    out = ScoringService().score_rows(_rows(candles, 40))
    assert out.indicators is not None
    assert out.indicators.ts_ms == [int(c.ts.timestamp() * 1000) for c in candles[:-1]]


class _ConcurrentBus:
    """A bus (unit-test fake) whose sends each wait until every expected topic has started sending: sends made
    one after the other never get there. ``failing`` names a topic whose send then fails."""

    def __init__(self, topics: int, failing: str | None = None) -> None:
        self.started: list[str] = []
        self.done: list[str] = []
        self.all_started = asyncio.Event()
        self.topics, self.failing = topics, failing

    async def _send(self, topic: Topic) -> None:
        self.started.append(topic.name)
        if len(self.started) == self.topics:
            self.all_started.set()
        await asyncio.wait_for(self.all_started.wait(), 2)
        if topic.name == self.failing:
            raise TransientError("broker away")
        self.done.append(topic.name)

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def publish_rows(self, topic: Topic, batch: Any, *, linger: bool = True) -> None:
        await self._send(topic)

    async def publish_v1_copy(self, topic: Topic, events: Any) -> None:
        await self._send(topic)

    async def publish(self, topic: Topic, events: Any) -> None:
        await self._send(topic)


async def test_a_batchs_outputs_are_sent_together_and_a_failure_is_raised_once_all_are_done() -> None:
    """Rows, v1 copies, grades and signals overlap their waits for the broker; a send that fails fails the
    batch with its own error (a TransientError stays one, so the bus redelivers) after the others finished."""
    ((_, _, bars),) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1])
    candles = [bar_to_event("BTC", Interval.D1, b) for b in bars[:400]]
    for failing in (None, GRADES.name):
        bus = _ConcurrentBus(topics=4, failing=failing)
        service = ScoringService()
        service.register(Context(settings=Settings(scoring={"predictions": False}), bus=bus))  # type: ignore[arg-type]
        service.ready.set()
        if failing is None:
            await service.on_candle_rows(_rows(candles, 400))
        else:
            with pytest.raises(TransientError):
                await service.on_candle_rows(_rows(candles, 400))
        assert sorted(bus.started) == sorted([INDICATORS_V2.name, INDICATORS.name, GRADES.name, SIGNALS.name])
        assert sorted(bus.done) == sorted(n for n in bus.started if n != failing)


class _HeldBus(_ConcurrentBus):
    """:class:`_ConcurrentBus` whose sends, once all have started, wait for ``release`` (a broker that is slow to
    acknowledge), and record what each sent."""

    def __init__(self, topics: int) -> None:
        super().__init__(topics)
        self.release = asyncio.Event()
        self.sent: list[tuple[str, int]] = []

    async def _send(self, topic: Topic) -> None:
        self.started.append(topic.name)
        if len(self.started) >= self.topics:
            self.all_started.set()
        await self.release.wait()
        self.done.append(topic.name)

    async def publish_rows(self, topic: Topic, batch: Any, *, linger: bool = True) -> None:
        await self._send(topic)
        self.sent.append((topic.name, len(batch)))


async def test_a_publish_cancelled_midway_is_sent_again_by_the_next_call() -> None:
    """A handler cancelled while its outputs wait for the broker (a stop, a lost partition) keeps them: the next
    call, whose candles are all duplicates and score nothing, sends them."""
    ((_, _, bars),) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1])
    candles = [bar_to_event("BTC", Interval.D1, b) for b in bars[:400]]
    bus = _HeldBus(topics=4)
    service = ScoringService()
    service.register(Context(settings=Settings(scoring={"predictions": False}), bus=bus))  # type: ignore[arg-type]
    service.ready.set()
    handling = asyncio.create_task(service.on_candle_rows(_rows(candles, 400)))
    await asyncio.wait_for(bus.all_started.wait(), 10)
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling
    assert bus.done == []
    bus.release.set()
    await service.on_candle_rows(_rows(candles, 400))  # the redelivery
    assert sorted(bus.done) == sorted([INDICATORS_V2.name, INDICATORS.name, GRADES.name, SIGNALS.name])
    assert bus.sent == [(INDICATORS_V2.name, 400)]  # the kept rows, once; the redelivery scored nothing new
