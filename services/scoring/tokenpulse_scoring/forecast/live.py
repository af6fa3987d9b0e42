"""Predictions inside the scoring service: a daily retrain and inference on the daily close.

* Retrain: when there is no registry version yet, or the current one is older than
  ``TOKENPULSE_PREDICTIONS_RETRAIN_HOURS``, and the daily candles have been quiet for
  ``QUIET_S`` (a history replay has finished), the whole walk-forward runs in a child process
  (:mod:`tokenpulse_scoring.forecast.retrain`) on the daily candles scoring already keeps (the
  last ``HISTORY`` of them), a new registry version is written, and every token gets fresh
  forecasts. Stopping the service kills a running retrain; the served version stays. The first
  version also publishes its served models' walk-forward forecasts of the last year (``kind`` =
  ``walk-forward``), so past forecasts can be compared with what happened from the start.
* Inference: a closed daily candle that is the token's newest, and recent (its close within
  ``RECENT_MS`` of now, so a history replay does not publish thousands of stale forecasts),
  produces the token's forecasts at every horizon with the served model.

Events go to ``tokenpulse.predictions.v1`` with deterministic ids (symbol, horizon, made_at,
version), so a redelivery or a restart replaces rather than adds.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import pickle
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tokenpulse_shared.events import PredictionEvent
from tokenpulse_shared.predictions import LEVELS, MIN_HISTORY_DAYS
from tokenpulse_shared.service import Context
from tokenpulse_shared.timeutil import DAY_MS
from tokenpulse_shared.topics import PREDICTIONS

from tokenpulse_scoring.forecast.registry import Bars, InsufficientHistory, Prediction, Predictor
from tokenpulse_scoring.forecast.walkforward import WalkConfig

log = logging.getLogger(__name__)
RECENT_MS = 2 * DAY_MS
QUIET_S = 20.0
CHECK_S = 30.0
_CHILDREN: set[asyncio.subprocess.Process] = set()


@atexit.register
def _kill_children() -> None:  # a retrain never outlives the service that started it
    for proc in list(_CHILDREN):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def to_event(p: Prediction) -> PredictionEvent:
    version = p.model.rsplit("@", 1)[-1]
    return PredictionEvent(
        event_id=f"pred-{p.symbol}-{p.horizon}-{p.made_at_ms}-{version}" + ("-wf" if p.kind != "live" else ""),
        symbol=p.symbol,
        horizon=p.horizon,  # type: ignore[arg-type]
        made_at=datetime.fromtimestamp(p.made_at_ms / 1000, UTC),
        target_ts=datetime.fromtimestamp(p.target_ms / 1000, UTC),
        point=p.point,
        lower=p.lower,
        upper=p.upper,
        interval=LEVELS[0],
        lower_95=p.lower_95,
        upper_95=p.upper_95,
        model=p.model,
        backtest=p.backtest,
        kind=p.kind,  # type: ignore[arg-type]
    )


class Forecaster:
    def __init__(
        self,
        bars_of: Callable[[str], Bars],
        symbols: Callable[[], Sequence[str]],
        root: Path,
        retrain_hours: float = 24.0,
        config: WalkConfig | None = None,
    ) -> None:
        self.bars_of = bars_of
        self.symbols = symbols
        self.root = root
        self.retrain_hours = retrain_hours
        self.config = config
        self.predictor: Predictor | None = None
        self.ctx: Context | None = None
        self.last_daily = time.monotonic()
        self.retrains = 0
        self.published = 0
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    # --- retrain ---------------------------------------------------------------------------

    def due(self, now: datetime | None = None) -> bool:
        """No version yet, the current one is older than the retrain period, or a token has reached the
        minimum history since it was trained (e.g. a first start that trained while a replay was young)."""
        if self.predictor is None:
            return True
        age = (now or datetime.now(UTC)) - self.predictor.created_at
        if age >= timedelta(hours=self.retrain_hours):
            return True
        trained = set(self.predictor.meta.get("symbols", []))
        return any(sym not in trained and len(self.bars_of(sym)) >= MIN_HISTORY_DAYS for sym in self.symbols())

    async def _train_process(self, data: Mapping[str, Bars]) -> Predictor | None:
        """Run :mod:`tokenpulse_scoring.forecast.retrain` in a child process, the job on its stdin."""
        job = pickle.dumps({"bars": dict(data), "config": self.config})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tokenpulse_scoring.forecast.retrain",
            "-",
            str(self.root),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _CHILDREN.add(proc)
        self._proc = proc
        try:
            out, err = await proc.communicate(job)
        finally:
            _CHILDREN.discard(proc)
            self._proc = None
        if proc.returncode == 3:
            return None  # no token has enough history yet
        if proc.returncode != 0:
            raise RuntimeError(f"retrain exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
        return Predictor(self.root / out.decode().strip().splitlines()[-1])

    async def retrain(self, only_if_due: bool = False) -> bool:
        """Retrain now (in a child process); publish fresh forecasts for every token. False: no data yet
        (or, with ``only_if_due``, a retrain was not due any more once the lock was ours)."""
        async with self._lock:
            if only_if_due and not self.due():
                return False
            t0 = time.perf_counter()
            first = not (self.root / "CURRENT").exists()
            data = {sym: list(self.bars_of(sym)) for sym in self.symbols()}
            predictor = await self._train_process(data)
            if predictor is None:
                return False
            self.predictor = predictor
            self.retrains += 1
            log.info(
                "predictions: trained %s in %.0fs; serving %s",
                predictor.version,
                time.perf_counter() - t0,
                ", ".join(f"{h}={m}" for h, m in predictor.served.items()),
            )
        if first:  # past forecasts to compare with what happened, from the first version's walk-forward
            await self.publish_events([to_event(p) for p in predictor.walk_forward()])
        await self.publish_all()
        return True

    async def _loop(self) -> None:
        while True:
            try:
                replaying = self.ctx is not None and self.ctx.status.get("backfill") == "running"
                quiet = time.monotonic() - self.last_daily >= QUIET_S and not replaying
                if quiet and self.due():
                    await self.retrain(only_if_due=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("predictions: retrain failed; the previous version stays in service")
            await asyncio.sleep(CHECK_S)

    # --- inference -------------------------------------------------------------------------

    def predict(self, symbol: str) -> list[Prediction]:
        if self.predictor is None:
            return []
        bars = self.bars_of(symbol)
        btc = self.bars_of("BTC") if symbol != "BTC" else None
        try:
            return self.predictor.predict(symbol, bars, btc)
        except InsufficientHistory as exc:
            log.debug("predictions: %s", exc)
            return []

    async def publish(self, symbols: Sequence[str]) -> int:
        return await self.publish_events([to_event(p) for sym in symbols for p in self.predict(sym)])

    async def publish_events(self, events: list[PredictionEvent]) -> int:
        assert self.ctx is not None
        for i in range(0, len(events), 5000):
            await self.ctx.bus.publish(PREDICTIONS, events[i : i + 5000])
        self.published += len(events)
        return len(events)

    async def publish_all(self) -> int:
        return await self.publish(list(self.symbols()))

    async def on_daily_closes(self, latest: dict[str, int]) -> None:
        """``latest``: symbol -> open time (ms) of the newest closed daily candle just processed."""
        self.last_daily = time.monotonic()
        now_ms = int(time.time() * 1000)
        fresh = [sym for sym, ts in latest.items() if ts + DAY_MS >= now_ms - RECENT_MS]
        if fresh and self.predictor is not None:
            await self.publish(fresh)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, ctx: Context) -> None:
        self.ctx = ctx
        try:
            self.predictor = Predictor.current(self.root)
        except Exception:
            log.exception("predictions: the current registry version does not load; retraining")
            self.predictor = None
        if self.predictor is not None and not self.due():
            await self.publish_all()
        self._task = asyncio.create_task(self._loop(), name="predictions-retrain")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
