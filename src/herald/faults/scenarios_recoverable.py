"""9. Recoverable topics under connection resets: what history covers is recovered with no gap
and no duplicate; what it no longer covers is reported (``HistoryLost``), every time.
16. Forged frames on a recoverable topic: rejected, bounded in reads and memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import herald
from herald import AsyncClient
from herald._core.wire import Encoder, batch

from ._harness import Scale, recording, running_server, summary, wait_for
from .checker import Checker
from .proxy import Proxy
from .scenarios_net import LiveFeed


@contextlib.asynccontextmanager
async def recovering(
    hub: AsyncClient, topic: str, checker: Checker, reader: str
) -> AsyncIterator[herald.Subscription]:
    """A subscription whose deliveries and ``HistoryLost`` reports go to ``checker``, in the
    order the iterator gives them (the report's place in the sequence is checked)."""
    async with recording(hub, topic, checker, reader) as sub:
        yield sub


@contextlib.asynccontextmanager
async def _fed(
    direct: AsyncClient,
    far: AsyncClient,
    topic: str,
    history: int,
    checker: Checker,
    *,
    rate: int,
    publisher: str,
) -> AsyncIterator[tuple[herald.Subscription, LiveFeed, asyncio.Task[None]]]:
    """``topic`` declared with ``history`` through ``direct``, read (recovering) through
    ``far`` as reader ``topic``, fed by ``direct`` at ``rate`` msg/s as ``publisher``: the
    subscription, the feed and its running task (stop the feed, then await the task)."""
    await direct.declare(topic, history=history)
    await asyncio.sleep(1.2)  # policy_refresh: every client sees the declaration
    async with recovering(far, topic, checker, topic) as sub:
        feed = LiveFeed(direct, topic, checker, rate=rate, publisher=publisher)
        load = asyncio.create_task(feed.run())
        try:
            yield sub, feed, load
        finally:
            load.cancel()  # done already, unless the body failed


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
        outage = await _outages(server.url, checker, scale)
    r = checker.report()
    deep_r, tight_r = r["readers"]["deep"], r["readers"]["tight"]
    out_r = r["readers"]["outage"]
    false_recoveries = r["duplicates"] + r["reordered"] + r["unexpected"]
    missed_deep = sum(1 for op in checker.ops.values() if op.topic == "deep") - deep_r["delivered"]
    return summary(
        r,
        {
            "deep history: lost == 0": deep_r["lost"] == 0 and missed_deep == 0,
            "tight history: every hole reported once, exact bounds, no silent skip": tight_r[
                "gaps_detected"
            ]
            == tight_r["gaps_happened"]
            and not (tight_r["silent_skips"] or tight_r["repeated"] or tight_r["bad_bounds"]),
            "deep history: no HistoryLost": deep_r["gaps_happened"] == 0,
            "outages past the history: one exact HistoryLost each, nothing else missing": out_r[
                "gaps_happened"
            ]
            == out_r["gaps_detected"]
            == outage["outages"]
            and not (out_r["silent_skips"] or out_r["repeated"] or out_r["bad_bounds"])
            and outage["last_delivered"],
            "false recoveries == 0": false_recoveries == 0,
            "resets happened": stats["deep"].recovered > 0,
        },
        resets=resets,
        recovered={k: s.recovered for k, s in stats.items()},
        history_lost={k: s.history_lost for k, s in stats.items()},
        duplicates_dropped={k: s.duplicates for k, s in stats.items()},
        false_recoveries=false_recoveries,
        outage=outage,
    )


async def _outages(url: str, checker: Checker, scale: Scale) -> dict[str, Any]:
    """The subscriber's connection is held down (the proxy refuses it) for longer than the
    topic's history lasts at its publish rate (history 2,000 at 2,000 msg/s), ``outages``
    times: each must cost exactly one HistoryLost, bounded by the offsets delivered around it,
    and delivery must go on from there with nothing missing or repeated, although every
    history read finds the front of the history trimmed again."""
    outages, seconds = scale.pick((1, 1.5), (3, 3.0))
    with Proxy(int(url.rsplit(":", 1)[1])) as proxy:
        direct = AsyncClient(url)
        far = AsyncClient(proxy.url, probe_interval=0.5, connect_timeout=1.0)
        try:
            fed = _fed(direct, far, "outage", 2000, checker, rate=2000, publisher="outage")
            async with fed as (sub, feed, load):
                for _ in range(outages):
                    await asyncio.sleep(2.0)
                    with checker.fault("outage past the history"):
                        proxy.down()
                        await asyncio.sleep(seconds)
                        proxy.up()
                await asyncio.sleep(2.0)
                feed.stop.set()
                await load
                last = max(seq for (p, seq) in checker.ops if p == "outage")
                arrived = await wait_for(
                    lambda: any(
                        d.seq == last for d in checker.deliveries[-100:] if d.reader == "outage"
                    ),
                    15,
                    0.05,
                )
                await asyncio.sleep(0.5)
                stats = sub.stats
        finally:
            await far.close()
            await direct.close()
    return {
        "outages": outages,
        "seconds": seconds,
        "history_lost": stats.history_lost,
        "recovered": stats.recovered,
        "last_delivered": arrived,
    }


async def _history_reads(hub: AsyncClient) -> int:
    """EVALSHA calls the server has run (publishes and history reads alike)."""
    info = await hub.execute("INFO", "commandstats")
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def recoverable_forged(scale: Scale) -> dict[str, Any]:
    """Frames that did not come from a recoverable topic's publish script, sent with a raw
    ``PUBLISH`` every 50 ms while 1k msg/s are published through it: an offset far ahead, the
    next offset in another epoch, and a batch frame of messages without offsets. None may be
    delivered, nothing real lost or repeated, no HistoryLost; then, with no traffic but the
    forged frames, at most two history reads per forged frame (not a loop)."""
    seconds = scale.pick(5.0, 30.0)
    checker = Checker("recoverable-forged")
    enc = Encoder("json")
    forged = sent = 0

    async def forge(hub: AsyncClient, epoch: int, until: float) -> None:
        nonlocal forged, sent
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            n = forged
            frames = [
                enc.envelope({"p": "forger", "s": n}, offset=10**12 + n, epoch=epoch),
                enc.envelope({"p": "forger", "s": n + 1}, offset=1, epoch=epoch + 1),
                batch([enc.envelope({"p": "forger", "s": n + 2 + i}) for i in range(100)]),
            ]
            for f in frames:
                await hub.execute("PUBLISH", "forged", f)
            forged += 102
            sent += len(frames)
            await asyncio.sleep(0.05)

    async with running_server(persist=False) as server:
        direct = AsyncClient(server.url)
        far = AsyncClient(server.url)
        try:
            fed = _fed(direct, far, "forged", 1000, checker, rate=1000, publisher="real")
            async with fed as (sub, feed, load):
                await wait_for(lambda: len(checker.deliveries) > 10, 5, 0.01)
                page = await far.history("forged", since=0, limit=1)
                epoch = page[0].epoch if page else None
                assert epoch is not None
                loop = asyncio.get_running_loop()
                await forge(direct, epoch, loop.time() + seconds)
                feed.stop.set()
                await load
                await wait_for(lambda: checker.missing("forged") == 0, 15, 0.05)
                # Idle: nothing is published but forged frames; count the reads they cause.
                before, sent_before = await _history_reads(direct), sent
                await forge(direct, epoch, loop.time() + 1.0)
                await asyncio.sleep(0.5)
                idle_reads = await _history_reads(direct) - before
                idle_frames = sent - sent_before
                stats = sub.stats
                track = sub._recovery.tracks.get("forged") if sub._recovery else None
                held = len(track.held) if track else 0
        finally:
            await far.close()
            await direct.close()
    r = checker.report()
    return summary(
        r,
        {
            "lost == 0": r["lost"] == 0,
            "forged delivered (unexpected) == 0": r["unexpected"] == 0,
            "duplicates == 0, reordered == 0": r["duplicates"] + r["reordered"] == 0,
            "history_lost == 0": stats.history_lost == 0,
            "every forged message rejected": stats.rejected == forged,
            "idle reads <= 2 per forged frame": idle_reads <= 2 * idle_frames,
            "nothing left held": held == 0,
        },
        forged_messages=forged,
        forged_frames=sent,
        rejected=stats.rejected,
        idle_forged_frames=idle_frames,
        idle_history_reads=idle_reads,
        held_at_end=held,
    )
