"""Fault scenarios of the network and the server's limits (numbers as in ``docs/guarantees.md``):
10 slow subscriber cut by ``client-output-buffer-limit``, 11 half-open link and added delay,
12 ``maxmemory`` with ``noeviction`` (and an evicting policy), 13 a consumer group overrun by
trimming."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import herald
from herald import AsyncClient, Gap

from ._harness import (
    Publisher,
    Scale,
    drain,
    recorded,
    recorder,
    recording,
    running_server,
    summary,
    wait_for,
)
from .checker import Checker
from .proxy import Proxy


class LiveFeed:
    """Publishes numbered live messages at ``rate`` per second; each is ``ok`` once queued (the
    publisher's own connection is not faulted)."""

    def __init__(
        self,
        hub: AsyncClient,
        topic: str,
        checker: Checker,
        rate: float,
        pad: int = 0,
        publisher: str = "live",
    ) -> None:
        self.hub, self.topic, self.checker, self.rate = hub, topic, checker, rate
        self.publisher = publisher
        self.pad = "x" * pad
        self.stop = asyncio.Event()

    async def run(self) -> None:
        started = time.monotonic()
        seq = 0
        while not self.stop.is_set():
            seq += 1
            due = started + seq / self.rate
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            op = self.checker.invoke(self.publisher, seq, topic=self.topic)
            await self.hub.publish(self.topic, {"p": self.publisher, "s": seq, "pad": self.pad})
            self.checker.ok(op)


@contextlib.asynccontextmanager
async def reading(
    hub: AsyncClient, topic: str, checker: Checker, reader: str
) -> AsyncIterator[herald.Subscription]:
    """A subscription whose deliveries and gap reports go to ``checker``."""

    def on_gap(gap: Gap) -> None:
        checker.gap(reader, gap.since, gap.until, gap.reason, detected=gap.detected)

    async with recording(hub, topic, checker, reader, on_gap=on_gap) as sub:
        yield sub


async def live_drain(checker: Checker, reader: str, last: int, timeout: float) -> None:
    """Wait until ``reader`` got message ``last`` of the live feed (or ``timeout``)."""
    await wait_for(
        lambda: any(d.seq == last for d in checker.deliveries[-50:] if d.reader == reader),
        timeout,
        0.05,
    )
    await asyncio.sleep(0.3)


async def slow_subscriber(scale: Scale) -> dict[str, Any]:
    """10. A subscriber that stops reading: the server's ``client-output-buffer-limit pubsub``
    cuts it off; the client reconnects, resubscribes and reports the gap."""
    stalls = scale.pick(1, 3)
    checker = Checker("slow-subscriber")
    limit = ["--client-output-buffer-limit", "pubsub 262144 131072 1"]
    async with running_server(limit, persist=False) as server:
        with Proxy(server.port) as proxy:
            direct = AsyncClient(server.url)
            # Probes far apart: the server's limit, not the client's probe, must cut the link.
            slow = AsyncClient(proxy.url, probe_interval=10, connect_timeout=1.0)
            try:
                async with reading(slow, "ticks", checker, "sub") as sub:
                    feed = LiveFeed(direct, "ticks", checker, rate=2000, pad=4096)
                    load = asyncio.create_task(feed.run())
                    await asyncio.sleep(1.0)
                    for _ in range(stalls):
                        with checker.fault("subscriber stops reading 2s"):
                            proxy.freeze(to_server=False)
                            await asyncio.sleep(2.0)
                            proxy.thaw()
                        await wait_for(lambda: sub.stats.gaps >= len(checker.faults), 10)
                        await asyncio.sleep(1.0)
                    feed.stop.set()
                    await load
                    await live_drain(checker, "sub", len(checker.ops), 10)
                    gaps = sub.stats.gaps
                info = await direct.execute("INFO", "stats")
            finally:
                await slow.close()
                await direct.close()
    cut = _info_field(info, "client_output_buffer_limit_disconnections")
    r = checker.report()
    last_ok = max((d.seq for d in checker.deliveries), default=0)
    return summary(
        r,
        {
            "server cut the subscriber off": (cut or 0) >= stalls,
            "every cut reported as a gap": gaps >= stalls,
            "gaps detected 100%": r["gaps"]["detected"] == r["gaps"]["happened"],
            "resumed: the last message arrived": last_ok == len(checker.ops),
            "unexpected == 0": r["unexpected"] == 0,
        },
        server_cutoffs=cut,
        gap_reports=gaps,
    )


def _info_field(info: Any, name: str) -> int | None:
    for line in bytes(info).decode().splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":", 1)[1])
    return None


async def half_open(scale: Scale) -> dict[str, Any]:
    """11. A link that stops forwarding with connections left open (half-open): probes detect it
    within ``probe_interval + probe_timeout`` (2x ``probe_interval``), live gaps are reported,
    durable publishes in flight are retried with their idempotency keys. Then a link that adds
    delay: no false detection, nothing lost."""
    interval = 0.5
    freeze = scale.pick(2.5, 5.0)
    delay = scale.pick(0.02, 0.05)
    checker = Checker("half-open")
    effects: set[str] = set()
    async with running_server() as server:
        with Proxy(server.port) as proxy:
            direct = AsyncClient(server.url)
            far = AsyncClient(proxy.url, probe_interval=interval, connect_timeout=1.0)
            try:
                await direct.declare("ledger", durable=True)
                checker.reader("g", "ledger")
                consumer = await recorded(direct, "ledger", "c0", checker, effects)
                async with reading(far, "feed", checker, "sub"):
                    feed = LiveFeed(direct, "feed", checker, rate=500)
                    pub = Publisher(far, "ledger", checker, "p0", window=1, rate=200, op_timeout=15)
                    stop = asyncio.Event()
                    load = asyncio.gather(feed.run(), pub.run(stop=stop))
                    await asyncio.sleep(1.0)
                    detected: dict[str, float | None] = {"command": None, "pubsub": None}
                    with checker.fault(f"half-open {freeze:g}s", ("p0",)) as fault:
                        proxy.freeze()
                        if await wait_for(lambda: not far.stats.connected, freeze, 0.005):
                            detected["command"] = round(time.time() - fault.start, 3)
                        await asyncio.sleep(max(0.0, freeze - (time.time() - fault.start)))
                        proxy.thaw()
                    await wait_for(lambda: bool(checker.gap_reports), 10)
                    if checker.gap_reports:
                        noticed = checker.gap_reports[0].detected or checker.gap_reports[0].at
                        detected["pubsub"] = round(noticed - fault.start, 3)
                    await asyncio.sleep(2.0)
                    feed.stop.set()
                    stop.set()
                    await load
                    await drain(checker, ["g"], 30, quiet=0)
                    await live_drain(checker, "sub", feed_last(checker), 10)
                await consumer.close()
            finally:
                await far.close()
                await direct.close()
        delayed = await _delayed_link(server.url, server.port, delay, scale)
    r = checker.report()
    bound = 2 * interval + 0.05  # scheduling tolerance: timers fire late on a busy machine
    return summary(
        r,
        {
            "lost == 0 (durable)": r["readers"]["g"]["lost"] == 0,
            "unexpected == 0": r["unexpected"] == 0,
            "duplicates_after_dedup == 0": r["duplicates_after_dedup"] == 0,
            "gaps detected 100%": r["gaps"]["detected"] == r["gaps"]["happened"],
            f"command link detected <= 2 x probe_interval (+50 ms): {bound}s": (
                detected["command"] or 99
            )
            <= bound,
            f"pubsub link detected <= 2 x probe_interval (+50 ms): {bound}s": (
                detected["pubsub"] or 99
            )
            <= bound,
            "delay: no false detection": delayed["reconnects"] == 0,
            "delay: lost == 0": delayed["lost"] == 0,
        },
        detection_s=detected,
        probe_interval=interval,
        delay=delayed,
    )


def feed_last(checker: Checker) -> int:
    return max((op.seq for op in checker.ops.values() if op.publisher == "live"), default=0)


async def _delayed_link(url: str, port: int, delay: float, scale: Scale) -> dict[str, Any]:
    checker = Checker("delay")
    with Proxy(port) as proxy:
        proxy.delay = delay
        direct = AsyncClient(url)
        far = AsyncClient(proxy.url, probe_interval=0.5)
        try:
            await direct.declare("slowlane", durable=True)
            consumer = await direct.consume("slowlane", "g", handler=recorder(checker, "g", "c0"))
            await Publisher(far, "slowlane", checker, "p0", window=8).run(scale.pick(300, 1000))
            await drain(checker, ["g"], 30, quiet=0)
            reconnects = far.stats.reconnects
            await consumer.close()
        finally:
            await far.close()
            await direct.close()
    r = checker.report()
    return {
        "delay_ms_each_way": delay * 1000,
        "ok": r["ops"]["ok"],
        "lost": r["lost"],
        "reconnects": reconnects,
        "latency_ms": r["latency_ms"],
        "throughput_per_s": r["throughput_per_s"],
    }


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def maxmemory(scale: Scale) -> dict[str, Any]:
    """12. ``maxmemory`` with ``noeviction``: once full, a durable publish fails visibly and
    nothing acknowledged is lost, nothing refused is stored. With a policy that evicts keys
    (streams included), the client warns when it connects."""
    checker = Checker("maxmemory")
    limit = ["--maxmemory", scale.pick("4mb", "32mb"), "--maxmemory-policy", "noeviction"]
    refused: list[str] = []
    async with running_server(limit) as server:
        hub = AsyncClient(server.url)
        try:
            await hub.declare("uploads", durable=True)
            pub = Publisher(
                hub, "uploads", checker, "p0", idempotent=False, window=1,
                extra=lambda seq: {"blob": "x" * 1024},
            )  # fmt: skip
            seq = 0
            failures_in_a_row = 0
            while failures_in_a_row < 20 and seq < 200_000:
                seq += 1
                op = await pub.one(seq)
                if op.outcome == "failed":
                    failures_in_a_row += 1
                    refused.append(op.error or "")
                else:
                    failures_in_a_row = 0
            checker.reader("stream")
            async for msg in hub.replay("uploads", page=2000):
                checker.deliver(msg.data["p"], msg.data["s"], reader="stream")
        finally:
            await hub.close()
    warned = await _eviction_warning()
    r = checker.report()
    oom = sum(1 for e in refused if "OOM" in e)
    return summary(
        r,
        {
            "publish fails visibly when full": r["ops"]["failed"] > 0 and oom == len(refused),
            "lost == 0": r["lost"] == 0,
            "refused and stored: 0": r["unexpected"] == 0,
            "evicting policy warned about at connect": warned,
        },
        refused_sample=refused[:1],
        eviction_warning=warned,
    )


async def _eviction_warning() -> bool:
    catcher = _Warnings()
    logger = logging.getLogger("herald")
    level = logger.level
    logger.addHandler(catcher)
    logger.setLevel(logging.WARNING)
    try:
        async with (
            running_server(["--maxmemory-policy", "allkeys-lru"], persist=False) as server,
            AsyncClient(server.url),
        ):
            pass
    finally:
        logger.removeHandler(catcher)
        logger.setLevel(level)
    return any("maxmemory" in m or "evict" in m for m in catcher.messages)


async def trim_overrun(scale: Scale) -> dict[str, Any]:
    """13. A consumer group far behind a length-trimmed stream (``trim_unacked``): the entries
    trimmed before it read them are reported (``PositionTrimmed``) and counted exactly."""
    behind = scale.pick(2_000, 20_000)
    checker = Checker("trim-overrun")
    async with running_server() as server:
        hub = AsyncClient(server.url)
        try:
            await hub.declare("audit", durable=True, max_len=100, trim_unacked=True)
            for group in ("raise", "continue"):
                await hub.execute("XGROUP", "CREATE", "herald:{audit}:s", group, "$", "MKSTREAM")
            pub = Publisher(hub, "audit", checker, "p0", idempotent=False, window=32)
            await pub.run(10)
            for group in ("raise", "continue"):
                async with hub.consume("audit", group, "c") as c:
                    for _ in range(10):
                        msg = await c.next(5)
                        checker.deliver(msg.data["p"], msg.data["s"], reader=group)
                        await msg.ack()
            await pub.run(behind, first=10)
            await hub.trim("audit")
            length = int(await hub.execute("XLEN", "herald:{audit}:s"))
            # "raise": the first read after the overrun stops the consumer with the error.
            error: herald.PositionTrimmed | None = None
            async with hub.consume("audit", "raise", "c") as c:
                try:
                    await c.next(5)
                except herald.PositionTrimmed as exc:
                    error = exc
                    checker.gap("raise", reason=str(exc))
            # "continue": counted in stats.trimmed, and the rest is read.
            got = 0
            async with hub.consume("audit", "continue", "c", on_trimmed="continue") as c:
                while got < length:
                    msg = await c.next(5)
                    if got == 0 and c.stats.trimmed:
                        checker.gap("continue", reason=f"{c.stats.trimmed} trimmed")
                    checker.deliver(msg.data["p"], msg.data["s"], reader="continue")
                    await msg.ack()
                    got += 1
                trimmed_counted = c.stats.trimmed
        finally:
            await hub.close()
    r = checker.report()
    expected = behind - length  # entries after the groups' positions removed unread
    return summary(
        r,
        {
            "raise: PositionTrimmed raised": error is not None,
            "raise: error counts every trimmed entry": error is not None and error.lost == expected,
            "continue: stats.trimmed counts every trimmed entry": trimmed_counted == expected,
            "gaps detected 100%": r["gaps"]["detected"] == r["gaps"]["happened"],
            "unexpected == 0": r["unexpected"] == 0,
        },
        trimmed=expected,
        reported_raise=error.lost if error else None,
        reported_continue=trimmed_counted,
    )
