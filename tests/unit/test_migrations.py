"""Applied migrations never change: a store that ran version N keeps its schema, so editing N's DDL would leave
stores made before and after the edit different. A new migration is a new version (pinned here once merged)."""

from __future__ import annotations

import hashlib

from tokenpulse_shared.store.migrations import MIGRATIONS

APPLIED = {
    1: "861b29a0fddfe37a",
    2: "d4b1ca87e6ebb2c1",
    3: "8d8e1499781450af",
    4: "48f519dee4530d2a",
    5: "b4a27d1a318da328",
    6: "8ef9aac12b2e112a",
    7: "233b721f69b364ef",
    8: "06a552f46e03f20c",
}
"""each released migration's version and the digest of its statements"""


def test_released_migrations_keep_their_statements() -> None:
    digests = {m.version: hashlib.sha256("\n".join(m.statements).encode()).hexdigest()[:16] for m in MIGRATIONS}
    assert {v: digests.get(v) for v in APPLIED} == APPLIED
