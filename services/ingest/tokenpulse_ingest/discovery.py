"""Universe discovery: which pairs the venues list now, and which tokens make the top N.

Every ``TOKENPULSE_UNIVERSE_DISCOVERY_S`` ingest asks the feed exchanges' listing endpoints (each venue's
``listings``) and, for ``TOKENPULSE_UNIVERSE_RANK_BY``, the figures the top-N cut ranks by: 24-hour dollar volume
from the venues' tickers (each venue's ``volumes``, summed over the token's dollar pairs on every venue) or market
cap from CoinGecko ``/coins/markets``. :meth:`Discovery.universe` is the universe to publish on
``tokenpulse.universe.v1``: the configured tokens with the listed pairs, cut to the top N; the publisher sends
the difference, so a token falling out of the top N is removed and one entering added (docs/design/0002-universe.md).
"""

from __future__ import annotations

import logging

from tokenpulse_shared.settings import Settings
from tokenpulse_shared.universe import Token, source, top_n

from tokenpulse_ingest.marketcaps import market_cap_ranking
from tokenpulse_ingest.venues.registry import fetch_listings, fetch_volumes, with_listings
from tokenpulse_ingest.venues.spec import Listings

log = logging.getLogger(__name__)


def finds_pairs(settings: Settings) -> bool:
    """Pair discovery is on while the live feed may use the exchanges."""
    return settings.ingest.universe_discovery and settings.ingest.live_feed in ("auto", "live")


def ranks(settings: Settings) -> bool:
    """The top-N cut ranks by figures read at run time (not by the file's order)."""
    return settings.runtime.universe_rank_by != "rank" and settings.runtime.universe_top_n > 0


class Discovery:
    """What the venues and CoinGecko said when last asked; a source that did not answer keeps its last word."""

    def __init__(self) -> None:
        self.listed: dict[str, Listings] = {}
        """each venue's pairs from its last listing answer in shape"""
        self.score: dict[str, float] | None = None
        """the figure the top-N cut ranks by, per symbol (None: none read yet, the cut goes by rank)"""
        self.said = "not asked yet"

    @staticmethod
    def wanted(settings: Settings) -> bool:
        return finds_pairs(settings) or ranks(settings)

    async def refresh(self, settings: Settings) -> bool:
        """Ask the listing endpoints and the ranking figures; True when anything answered (publish again)."""
        found: dict[str, Listings] = {}
        if finds_pairs(settings) or settings.runtime.universe_rank_by == "quote_volume":
            found = await fetch_listings(settings)
            self.listed.update(found)
        scored = await self._rank(settings) if ranks(settings) else False
        self.said = ", ".join(sorted(found)) or "no exchange answered"
        if ranks(settings):
            self.said += f"; top {settings.runtime.universe_top_n} by " + (
                settings.runtime.universe_rank_by if self.score is not None else "rank (no figures yet)"
            )
        return bool(found) or scored

    async def _rank(self, settings: Settings) -> bool:
        by = settings.runtime.universe_rank_by
        score: dict[str, float] | None
        try:
            if by == "market_cap":
                score = await market_cap_ranking(settings, [t.symbol for t in source(settings)])
            else:
                score = await fetch_volumes(settings, self.listed) if self.listed else None
        except Exception as exc:  # unreachable or out of shape: the cut keeps what it had
            log.warning("universe: %s figures not read (%s)", by, exc)
            score = None
        if not score:
            kept = "keeping the last figures" if self.score is not None else "cutting by rank until they are"
            log.warning("universe: no %s figures for the top %d; %s", by, settings.runtime.universe_top_n, kept)
            return False
        self.score = score
        return True

    def universe(self, settings: Settings) -> list[Token]:
        """The configured tokens, their pairs checked against the listings, cut to the top N."""
        tokens = source(settings)
        if finds_pairs(settings):
            tokens = with_listings(tokens, self.listed)
        return top_n(tokens, settings.runtime.universe_top_n, self.score if ranks(settings) else None)
