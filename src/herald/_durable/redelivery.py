"""Redelivery for one consumer: reclaiming idle entries, nak delays, hand-back, clean-up.

Runs as the consumer's maintenance task, every :func:`~herald._core.streams.claim_interval`:

- reclaim entries idle past ``ack_wait`` (a dead or stuck consumer's, or nak'd ones whose delay
  has passed), dead-lettering those past ``max_deliver``, and deliver the rest here;
- keep entries nak'd with a delay longer than ``ack_wait`` (the server cannot set an idle time
  in the future, so they are refreshed until ``ack_wait`` before they are due);
- keep the entries still waiting in the consumer's buffer from going idle while it works
  through the ones before them: an entry's idle time runs from its read or claim, so a big
  claimed backlog would otherwise become claimable by the others while still buffered here,
  and be handled twice (``buffered``: the entries to refresh, none when it made no progress);
- now and then, delete idle consumers holding nothing, and apply the topic's retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from herald._core.durable_message import ConsumerStats
from herald._core.streams import HANDBACK_IDLE_MS, DurableTopic, Entry, claim_interval
from herald._errors import ClientClosed, ConnectionLost, ServerError, Timeout

from .group import Member

log = logging.getLogger("herald")

TRIM_INTERVAL = 5.0  # seconds between a consumer's retention passes
_EPSILON = 0.005  # claim this long after an entry becomes claimable (clock granularity)


class Redelivery:
    """The maintenance side of one consumer.

    Args:
        room: how many more entries the consumer may take (``max_ack_pending``).
        deliver: hands claimed entries to the consumer.
        policy: the topic's current policy (for retention).
    """

    def __init__(
        self,
        member: Member,
        stats: ConsumerStats,
        *,
        ack_wait: float,
        batch: int,
        delete_idle_after: float,
        room: Callable[[], int],
        deliver: Callable[[list[Entry]], None],
        policy: Callable[[], DurableTopic],
        buffered: Callable[[], list[bytes]] | None = None,
    ) -> None:
        self.member = member
        self.stats = stats
        self.ack_wait = ack_wait
        self.batch = batch
        self.delete_idle_after = delete_idle_after
        self._room = room
        self._deliver = deliver
        self._policy = policy
        self._buffered = buffered
        self._ack_wait_ms = max(1, int(ack_wait * 1000))
        self._cursor = "0-0"  # XAUTOCLAIM's, kept between passes
        self._delayed: dict[bytes, float] = {}  # naks past ack_wait: entry id -> monotonic due
        self._now = asyncio.Event()
        self._closed = False

    def kick(self) -> None:
        """Claim now rather than at the next interval."""
        if not self._closed:
            self._now.set()

    def close(self) -> None:
        self._closed = True

    async def run(self) -> None:
        interval = claim_interval(self.ack_wait)
        reap_every = min(60.0, self.delete_idle_after / 2)
        now = time.monotonic()
        next_reap, next_trim = now + reap_every, now + TRIM_INTERVAL
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._now.wait()
            self._now.clear()
            try:
                await self.claim()
                await self._keep_delayed()
                if self._buffered is not None and (waiting := self._buffered()):
                    await self.member.lease(waiting, 0)
                now = time.monotonic()
                if now >= next_reap:
                    next_reap = now + reap_every
                    idle_ms = int(self.delete_idle_after * 1000)
                    await self.member.reap(idle_ms, keep=self.member.name)
                if now >= next_trim:
                    next_trim = now + TRIM_INTERVAL
                    await self.member.trim(self._policy())
            except ServerError as exc:
                if not exc.reply.startswith("NOGROUP"):  # the reader repairs that
                    log.warning("consumer %s: %s", self.member.name, exc)
            except (ConnectionLost, Timeout) as exc:
                log.debug("consumer %s maintenance: %s", self.member.name, exc)
            except ClientClosed:
                return

    async def claim(self) -> None:
        for _ in range(10):  # bounded work per pass
            room = self._room()
            if room <= 0 or self._closed:
                return
            count = min(self.batch, room)
            cursor, entries, buried = await self.member.claim(
                self._cursor, self._ack_wait_ms, count
            )
            self.stats.dead_lettered += buried
            self.stats.redelivered += len(entries)
            if not self._closed:
                self._deliver(entries)
            self._cursor = cursor
            if cursor == "0-0":
                return

    async def delay(self, offset: bytes, delay: float) -> None:
        """Make ``offset`` claimable again after ``delay`` seconds (a nak)."""
        # An entry is claimable once idle for ack_wait: set its idle time accordingly.
        if delay > self.ack_wait:
            self._delayed[offset] = time.monotonic() + delay
            await self.member.lease([offset], 0)
            return
        await self.member.lease([offset], int((self.ack_wait - delay) * 1000))
        asyncio.get_running_loop().call_later(delay + _EPSILON, self.kick)

    async def _keep_delayed(self) -> None:
        if not self._delayed:
            return
        now = time.monotonic()
        keep = [o for o, due in self._delayed.items() if due - now > self.ack_wait]
        await self.member.lease(keep, 0)
        for offset, due in list(self._delayed.items()):
            left = due - now
            if left <= self.ack_wait:
                del self._delayed[offset]
                await self.member.lease([offset], int((self.ack_wait - max(left, 0.0)) * 1000))
                asyncio.get_running_loop().call_later(max(left, 0.0) + _EPSILON, self.kick)

    async def hand_back(self, held: list[tuple[bytes, str]]) -> None:
        """On close: make the consumer's unsettled entries claimable by the others at once
        (``held``: offset, delivery count to set or ""); nak'd ones when they are due."""
        self._closed = True
        if held:
            offsets = [offset for offset, _ in held]
            await self.member.lease(offsets, HANDBACK_IDLE_MS, [retry for _, retry in held])
        now = time.monotonic()
        for offset, due in self._delayed.items():
            left = max(0.0, due - now)
            await self.member.lease([offset], int(max(0.0, self.ack_wait - left) * 1000))
        self._delayed.clear()
