"""A gateway with a genuine server-side fault, for the error-path tests: ``tokenpulse up``'s own ``serve``
(the same logging setup, the same uvicorn configuration) running the gateway alone on the real chDB engine,
whose ``indicators`` table is dropped once it serves, so ``GET /v1/indicators/{symbol}`` meets a real engine
error that no client input explains. Settings come from the environment (``TOKENPULSE_PORT``,
``TOKENPULSE_DATA_DIR``, ``TOKENPULSE_LOG_FORMAT`` ...). Run: ``python -m tests.security.failing_gateway``.
"""

from __future__ import annotations

import asyncio
import logging

from tokenpulse_shared.settings import Settings

from tokenpulse.runtime import Runtime, serve

BROKEN = "failing gateway: the indicators table is dropped"


def break_the_store(runtime: Runtime) -> None:
    async def drop() -> None:
        assert runtime.ctx is not None and runtime.ctx.store is not None
        await runtime.ctx.store.command("DROP TABLE indicators")
        logging.getLogger("tests.security").warning(BROKEN)

    runtime.tasks.append(asyncio.get_running_loop().create_task(drop()))


if __name__ == "__main__":
    asyncio.run(
        serve(Settings(runtime={"backfill_on_start": False}), ["gateway"], embedded=True, on_ready=break_the_store)
    )
