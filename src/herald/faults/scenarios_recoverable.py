"""9. Recoverable topics under connection resets: what history covers is recovered with no gap
and no duplicate; what it no longer covers is reported (``HistoryLost``), every time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import herald
from herald import AsyncClient

from ._harness import Scale, recording, running_server, summary, wait_for
from .checker import Checker
from .proxy import Proxy
from .scenarios_net import LiveFeed


@contextlib.asynccontextmanager
async def recovering(
    hub: AsyncClient, topic: str, checker: Checker, reader: str
) -> AsyncIterator[herald.Subscription]:
    """A subscription whose deliveries and ``HistoryLost`` reports go to ``checker``."""

    def lost(exc: herald.HistoryLost) -> None:
        checker.gap(reader, reason=str(exc))

    async with recording(hub, topic, checker, reader, on_history_lost=lost) as sub:
        yield sub


async def recoverable_reset(scale: Scale) -> dict[str, Any]:
    """A subscriber's connection is reset every 2 s while 1k msg/s are published to a topic
    whose history reaches back far enough (``deep``) and to one whose history is too short to
    bridge a reconnect (``tight``)."""
    seconds = scale.pick(10.0, 60.0)
    checker = Checker("recoverable-reset")
    async with running_server(persist=False) as server:
        with Proxy(server.port) as proxy:
            direct = AsyncClient(server.url)
            far = AsyncClient(proxy.url, probe_interval=0.5, connect_timeout=1.0)
            try:
                await direct.declare("deep", history=100_000)
                await direct.declare("tight", history=5)
                await asyncio.sleep(1.2)  # policy_refresh: every client sees the declarations
                async with (
                    recovering(far, "deep", checker, "deep") as deep,
                    recovering(far, "tight", checker, "tight") as tight,
                ):
                    feeds = [
                        LiveFeed(direct, "deep", checker, rate=1000),
                        LiveFeed(direct, "tight", checker, rate=500, publisher="tight"),
                    ]
                    load = asyncio.gather(*(f.run() for f in feeds))
                    resets = int(seconds / 2)
                    for _ in range(resets):
                        await asyncio.sleep(2.0)
                        with checker.fault("connection reset"):
                            proxy.cut()
                    await asyncio.sleep(1.0)
                    for f in feeds:
                        f.stop.set()
                    await load
                    await wait_for(lambda: checker.missing("deep") == 0, 15, 0.05)
                    await asyncio.sleep(0.5)
                    stats = {"deep": deep.stats, "tight": tight.stats}
            finally:
                await far.close()
                await direct.close()
    r = checker.report()
    deep_r, tight_r = r["readers"]["deep"], r["readers"]["tight"]
    false_recoveries = r["duplicates"] + r["reordered"] + r["unexpected"]
    missed_deep = sum(1 for op in checker.ops.values() if op.topic == "deep") - deep_r["delivered"]
    return summary(
        r,
        {
            "deep history: lost == 0": deep_r["lost"] == 0 and missed_deep == 0,
            "tight history: gaps detected 100%": tight_r["gaps_detected"]
            == tight_r["gaps_happened"],
            "false recoveries == 0": false_recoveries == 0,
            "resets happened": stats["deep"].recovered > 0,
        },
        resets=resets,
        recovered={k: s.recovered for k, s in stats.items()},
        history_lost={k: s.history_lost for k, s in stats.items()},
        duplicates_dropped={k: s.duplicates for k, s in stats.items()},
        false_recoveries=false_recoveries,
    )
