"""The trading venues: one module each (stream, candle history, pair naming, limits), listed in ``registry``.

``connector`` holds what every live stream shares (connection loop, dedupe, gaps), ``history``
what every candle endpoint shares, ``spec`` the :class:`~tokenpulse_ingest.venues.spec.Venue`
a venue module ends with.
"""
