"""The bus port: how services exchange events, whatever carries them.

Two adapters implement it: :class:`~tokenpulse_shared.bus.memory.InMemoryBus`
(embedded mode) and :class:`~tokenpulse_shared.bus.kafka.KafkaBus`
(distributed mode). Both give the same guarantees:

* per-key order: events with the same key (the token symbol; a rule id for
  rules) reach a handler in the order they were published;
* at-least-once: a handler's batch counts as done only when the handler
  returns; a :class:`TransientError` (a dependency is down) redelivers the
  batch after a backoff, so handlers must be idempotent (event ids);
* dead letters: a message that is not valid JSON or fails its model's
  validation, and an event a handler keeps failing on with any other
  exception, is published to ``tokenpulse.dead-letter.v1`` with the reason and
  the original payload; the consumer goes on;
* deliveries (:class:`Delivery`): a consumer group shares a topic out among its
  instances, or every instance reads all of it (broadcast, tail, tail of the
  others' messages).

The contract tests (``tests/contract/``) run the same behaviours against both.
"""

from __future__ import annotations

from tokenpulse_shared.bus.base import (
    Assignment,
    Bus,
    Delivery,
    Handler,
    PartitionHook,
    RawMessage,
    Rejected,
    Subscription,
    TransientError,
    decode_message,
    rows_as_events,
)

__all__ = [
    "Assignment",
    "Bus",
    "Delivery",
    "Handler",
    "PartitionHook",
    "RawMessage",
    "Rejected",
    "Subscription",
    "TransientError",
    "decode_message",
    "rows_as_events",
]
