"""Recovery of a subscription's recoverable topics: positions at start, catch-up after a
reconnect or a break in the sequence, delivered in order with no gap and no duplicate.

The rule that leaves no window: a topic is read from its history only after the subscription
is confirmed on the server, while the live messages arriving meanwhile are held; the history
read delivers everything up to the moment it ran, the held messages everything after, and the
offsets sort out the overlap (``_history.accept``/``apply_page``/``release``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from herald._core.backoff import Backoff
from herald._core.history import (
    MAX_READ,
    Counters,
    Page,
    Track,
    accept,
    apply_page,
    release,
    screen,
)
from herald._core.message import Message
from herald._core.topics import is_pattern
from herald._core.wire import decode
from herald._errors import ClientClosed, ConfigurationError, HeraldError, HistoryLost

log = logging.getLogger("herald")

Reader = Callable[[str, int, int], Awaitable[Page]]


class Counted(Protocol):
    """The counters recovery keeps in a subscription's stats."""

    recovered: int
    duplicates: int
    history_lost: int
    rejected: int


class Recovering(Protocol):
    """What recovery uses of its subscription."""

    @property
    def names(self) -> tuple[str, ...]: ...
    @property
    def stats(self) -> Counted: ...
    @property
    def max_pending(self) -> int: ...
    @property
    def handler(self) -> Callable[..., Any] | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def pending(self) -> int: ...
    def _add(self, messages: list[Message]) -> None: ...
    def _lost(self, lost: HistoryLost) -> None: ...


class Recovery:
    """Per subscription: what it knows of each recoverable topic, and the catch-up tasks."""

    def __init__(
        self,
        sub: Recovering,
        read: Reader,
        totals: Counters,
        recoverable: Callable[[str], bool] = lambda topic: True,
    ) -> None:
        self.sub = sub
        self.read = read
        self.totals = totals
        self.recoverable = recoverable
        self.tracks: dict[str, Track] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.live = True  # False between a lost connection and the resubscribe

    # -- live messages -----------------------------------------------------------------------

    def accept(self, messages: list[Message]) -> list[Message]:
        """The messages of a frame that continue their topic's sequence (in order)."""
        first = messages[0]
        if (
            first.offset is None
            and first.topic in self.tracks
            and not self.recoverable(first.topic)
        ):
            # Not recoverable any more (its history was declared away): live from here on,
            # rather than every later message rejected as not from the publish script.
            self.forget(first.topic)
        out: list[Message] = []
        stale: list[str] = []
        duplicates, rejected = accept(self.tracks, messages, out, stale)
        self._count(duplicates=duplicates, rejected=rejected)
        for topic in stale:
            self._recover(topic)
        return out

    def stale(self) -> None:
        """The connection is lost: every topic needs a history read after the resubscribe."""
        self.live = False
        for t in self.tracks.values():
            t.recovering = True

    def resume(self) -> None:
        """Subscribed again: catch up every topic."""
        self.live = True
        for topic, t in self.tracks.items():
            if t.recovering:
                self._recover(topic)

    def forget(self, topic: str) -> None:
        """Stop sequencing ``topic``: its messages are delivered as live ones."""
        self.tracks.pop(topic, None)
        if (task := self.tasks.pop(topic, None)) is not None:
            task.cancel()

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    # -- start -------------------------------------------------------------------------------

    def hold(self, topics: dict[str, str | None]) -> None:
        """Before subscribing: hold the live messages of these topics until positioned."""
        for topic, pattern in topics.items():
            t = self.tracks[topic] = Track(None, 0, pattern)
            t.recovering = True

    async def position(
        self, topics: dict[str, str | None], since: int | None, epoch: int | None, last: int | None
    ) -> None:
        """Once subscribed: place each topic at ``since``, at its last ``last`` messages, or at
        the end (the first message delivered is the first published after the subscribe)."""
        for topic in topics:
            t = self.tracks[topic]
            if since is not None:
                t.epoch, t.offset = epoch, since
            else:
                page = await self.read(topic, 0, 0)
                if page.epoch is None:
                    t.epoch, t.offset = None, 0
                elif last:
                    t.epoch = page.epoch
                    t.offset = max(page.top - last, page.first - 1, 0)
                else:
                    t.epoch, t.offset = page.epoch, page.top
                    first_held = t.held[0] if t.held else None
                    if first_held is not None and first_held.epoch == page.epoch:
                        assert isinstance(first_held.offset, int)
                        t.offset = min(t.offset, first_held.offset - 1)
                    out: list[Message] = []
                    self._count(duplicates=release(t, out))
                    self.sub._add(out)
                    if not t.recovering:
                        continue
            await self._catch_up(topic, t, initial=True)

    # -- catch-up ----------------------------------------------------------------------------

    def _recover(self, topic: str) -> None:
        t = self.tracks[topic]
        t.resync = True  # a running task reads once more
        if topic not in self.tasks:
            self.tasks[topic] = asyncio.get_running_loop().create_task(self._run(topic))

    async def _run(self, topic: str) -> None:
        t = self.tracks[topic]
        backoff = Backoff(0.05, 2.0)
        try:
            while not self.sub.closed and self.live:
                try:
                    if await self._catch_up(topic, t):
                        return
                    backoff.reset()
                except ClientClosed:
                    return
                except HeraldError as exc:
                    log.warning("recovering %r failed, retrying: %s", topic, exc)
                    await asyncio.sleep(backoff.next())
        finally:
            # Synchronously with the last check of _catch_up: a _recover() after this point
            # starts a new task, none can be lost on a task about to end.
            if self.tasks.get(topic) is asyncio.current_task():
                del self.tasks[topic]

    async def _catch_up(self, topic: str, t: Track, initial: bool = False) -> bool:
        """Read history until caught up; True when done (live again)."""
        sub = self.sub
        while not sub.closed:
            if not initial and not self.live:
                return False  # the resubscribe starts again
            room = sub.max_pending - sub.pending
            if room <= 0 and sub.handler is None and not initial:
                await asyncio.sleep(0.005)  # the reader is behind: wait rather than drop
                continue
            t.resync = False
            room = max(1, room)
            received = len(t.held)  # held before the read is sent: the read must hold them
            page = await self.read(topic, t.offset, min(MAX_READ, room))
            self._count(rejected=screen(t, page, received))
            out: list[Message] = []
            lost, more = apply_page(topic, t, page, self._decoder(t), out, room)
            if lost is not None:
                self._count(lost=1)
                sub._lost(lost)
            self._count(recovered=len(out))
            sub._add(out)
            if more or t.resync:
                if initial:
                    self._recover(topic)  # the rest in the background: start() returns now
                    return False
                continue
            out = []
            self._count(duplicates=release(t, out))
            sub._add(out)
            if not t.recovering and not t.resync:
                return True
            t.recovering = True
            if initial:
                self._recover(topic)  # the rest in the background: start() returns now
                return False
        return True

    def _count(
        self, recovered: int = 0, duplicates: int = 0, lost: int = 0, rejected: int = 0
    ) -> None:
        stats, totals = self.sub.stats, self.totals
        if rejected:
            stats.rejected += rejected
            totals.rejected += rejected
            if (
                stats.rejected == rejected
                or stats.rejected // 1000 != (stats.rejected - rejected) // 1000
            ):
                log.warning(
                    "subscription %s: dropped %d message(s) not published by the recoverable "
                    "topic's script (no offset, or an offset or epoch its history denies); "
                    "%d so far",
                    ",".join(self.sub.names),
                    rejected,
                    stats.rejected,
                )
        stats.recovered += recovered
        totals.recovered += recovered
        stats.duplicates += duplicates
        totals.duplicates += duplicates
        stats.history_lost += lost
        totals.history_lost += lost

    @staticmethod
    def _decoder(t: Track) -> Callable[[str, bytes], list[Message]]:
        pattern = t.pattern
        if pattern is None:
            return decode
        return lambda topic, raw: decode(topic, raw, pattern)


def check_start(
    names: tuple[str, ...], since: int | None, epoch: int | None, last: int | None
) -> None:
    """Refuse start positions that cannot apply to these names."""
    if since is not None and last is not None:
        raise ConfigurationError("pass since= or last=, not both")
    if since is not None and (len(names) != 1 or is_pattern(names[0])):
        raise ConfigurationError("since= applies to a subscription to one recoverable topic")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        raise ConfigurationError("since must be an offset (an int >= 0)")
    if epoch is not None and since is None:
        raise ConfigurationError("epoch= goes with since=")
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise ConfigurationError("last must be an int >= 1")
