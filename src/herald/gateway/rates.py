"""Message rates per topic, seen by a pattern subscription that runs only while someone looks.

The dashboard, ``GET /topics`` and ``GET /stats`` switch the monitor on; it unsubscribes after
``idle`` seconds without such a request, so a gateway nobody watches pays nothing for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque

from herald import AsyncClient, Message, Subscription

log = logging.getLogger("herald.gateway")

INTERNAL_PREFIX = "_herald."
_WINDOW = 60  # seconds of per-second totals kept for the chart
_MAX_TOPICS = 1000  # topics tracked at most (the busiest survive a reset)


class Rates:
    """Counts messages per topic and per second while active."""

    def __init__(self, hub: AsyncClient, idle: float = 30.0) -> None:
        self.hub = hub
        self.idle = idle
        self.seen: Counter[str] = Counter()
        self._recent: deque[tuple[int, Counter[str]]] = deque(maxlen=_WINDOW + 1)
        self._sub: Subscription | None = None
        self._last_wanted = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.since: float | None = None

    @property
    def active(self) -> bool:
        return self._sub is not None

    def _count(self, msg: Message) -> None:
        topic = msg.topic
        if topic.startswith(INTERNAL_PREFIX):
            return
        second = int(time.time())
        recent = self._recent
        if not recent or recent[-1][0] != second:
            recent.append((second, Counter()))
        recent[-1][1][topic] += 1
        if topic in self.seen or len(self.seen) < _MAX_TOPICS:
            self.seen[topic] += 1

    async def want(self) -> None:
        """Start the monitor (if it is not running) and keep it running ``idle`` seconds more."""
        self._last_wanted = time.monotonic()
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is None:
                sub = self.hub.subscribe("*", handler=self._count, max_pending=100_000)
                await sub.start()
                self._sub = sub
                self.since = time.time()
                self._task = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        while time.monotonic() - self._last_wanted < self.idle:  # noqa: ASYNC110 - a deadline
            await asyncio.sleep(max(0.5, self.idle - (time.monotonic() - self._last_wanted)))
        await self.stop()

    async def stop(self) -> None:
        async with self._lock:
            sub, self._sub = self._sub, None
            task, self._task = self._task, None
            self.since = None
            if sub is not None:
                await sub.close()
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    def series(self) -> list[tuple[int, int]]:
        """(second, messages) for each of the last complete seconds, oldest first, zeros
        included."""
        now = int(time.time())
        totals = {second: sum(c.values()) for second, c in self._recent}
        return [(s, totals.get(s, 0)) for s in range(now - _WINDOW, now)]

    def per_topic(self, seconds: int = 5) -> dict[str, float]:
        """Messages per second per topic over the last ``seconds`` complete seconds."""
        now = int(time.time())
        total: Counter[str] = Counter()
        for second, counts in self._recent:
            if now - seconds <= second < now:
                total.update(counts)
        return {t: n / seconds for t, n in total.items()}
