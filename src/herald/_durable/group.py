"""One consumer's server-side steps in its consumer group (each one round trip), and its acks.

The steps that must be atomic are scripts (``_streams``); the ones that may touch an entry
another consumer took over (lease, term) check ownership first, in the same script.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from herald._core.resp import command
from herald._core.streams import (
    CLAIM,
    LEASE,
    REAP,
    RESTORE,
    RESUME,
    TERM,
    TOPICS_KEY,
    TOPICS_VERSION_KEY,
    TRIM,
    DurableTopic,
    Entry,
    parse_claimed,
)
from herald._errors import ClientClosed, ConfigurationError, HeraldError, ServerError

from .publish import Scripts

log = logging.getLogger("herald")


class Member:
    """Consumer ``name`` of ``group`` on a durable topic; entries past ``max_deliver``
    deliveries are dead-lettered by the steps that deliver them again."""

    def __init__(
        self, scripts: Scripts, spec: DurableTopic, group: str, name: str, max_deliver: int
    ) -> None:
        self.scripts = scripts
        self.spec = spec
        self.group = group
        self.name = name
        self.max_deliver = max_deliver

    async def create(self, start: str) -> None:
        """Create the group at ``start`` (and the stream) unless it exists."""
        try:
            await self.scripts.link.execute(
                "XGROUP", "CREATE", self.spec.stream, self.group, start, "MKSTREAM"
            )
        except ServerError as exc:
            if exc.reply.startswith("BUSYGROUP"):
                return
            if "Invalid stream ID" in exc.reply:
                raise ConfigurationError(f"invalid start {start!r}: {exc.reply}") from exc
            raise

    def _deliver_args(self) -> list[Any]:
        return [self.max_deliver, self.spec.topic, self.spec.dead_channel]

    async def resume(self, after: str, count: int) -> tuple[str | None, list[Entry], int]:
        """This consumer's own pending entries after ``after`` ("-": all), delivered again;
        (the next ``after``, or None when done; entries; number dead-lettered)."""
        spec = self.spec
        reply = await self.scripts.call(
            RESUME,
            [spec.stream, spec.dead_stream],
            [self.group, self.name, after, count, *self._deliver_args()],
        )
        cursor, entries, buried = parse_claimed(reply)
        return (None if cursor == b"0-0" else cursor.decode()), entries, buried

    async def claim(
        self, cursor: str, min_idle_ms: int, count: int
    ) -> tuple[str, list[Entry], int]:
        """Entries of any consumer idle for ``min_idle_ms``, taken over (XAUTOCLAIM from
        ``cursor``); (next cursor, "0-0" at the end of a pass; entries; number dead-lettered)."""
        spec = self.spec
        reply = await self.scripts.call(
            CLAIM,
            [spec.stream, spec.dead_stream],
            [self.group, self.name, min_idle_ms, cursor, count, *self._deliver_args()],
        )
        next_cursor, entries, buried = parse_claimed(reply)
        return next_cursor.decode(), entries, buried

    async def lease(
        self, offsets: Sequence[bytes], idle_ms: int, retry: Sequence[str] | None = None
    ) -> int:
        """Set the idle time of entries this consumer still owns (``retry``: delivery counts
        to set, "" to keep); the number changed."""
        if not offsets:
            return 0
        pairs: list[bytes | str] = []
        for i, offset in enumerate(offsets):
            pairs += (offset, retry[i] if retry else "")
        reply = await self.scripts.call(
            LEASE, [self.spec.stream], [self.group, self.name, idle_ms, *pairs]
        )
        return int(reply)

    async def bury(self, offset: bytes, reason: str) -> bool:
        """Dead-letter an entry this consumer owns; False if it is not its own anymore."""
        spec = self.spec
        done = await self.scripts.call(
            TERM,
            [spec.stream, spec.dead_stream],
            [self.group, self.name, offset, reason, spec.topic, spec.dead_channel],
        )
        return bool(done)

    async def reap(self, idle_ms: int, *, keep: str = "", only: str = "") -> int:
        """Delete consumers idle ``idle_ms`` holding nothing (never ``keep``; ``only``: just
        that one); the number deleted."""
        reply = await self.scripts.call(REAP, [self.spec.stream], [self.group, idle_ms, keep, only])
        return int(reply)

    async def trim(self, spec: DurableTopic) -> int:
        """Apply the topic's retention (``spec``: its current policy)."""
        if not spec.retains:
            return 0
        return int(await self.scripts.call(TRIM, [spec.stream], spec.trim_args))

    async def restore(self) -> int:
        """After NOGROUP: 1 if the policy registry was flushed and this topic's policy is
        restored, 0 if the topic is declared, -1 if it was deleted."""
        spec = self.spec
        dead = spec.dead_channel if spec.dead_json else ""
        reply = await self.scripts.call(
            RESTORE,
            [TOPICS_KEY, TOPICS_VERSION_KEY],
            [spec.topic, spec.policy_json, dead, spec.dead_json],
        )
        return int(reply)


def bulk_strings(items: list[bytes]) -> bytes:
    """Byte strings as RESP bulk strings, in any order (as XACK takes its ids).

    Grouped by length, each group is one ``join``: entry ids have few distinct lengths, and this
    costs about a third of formatting each one.

    Example::

        >>> bulk_strings([b"10-1", b"9-1"])
        b'$3\\r\\n9-1\\r\\n$4\\r\\n10-1\\r\\n'
    """
    parts = []
    for n, group in groupby(sorted(items, key=len), len):
        parts.append(b"$%d\r\n" % n + (b"\r\n$%d\r\n" % n).join(group) + b"\r\n")
    return b"".join(parts)


class Acks:
    """Acks from the loop or any thread, sent as one XACK per event-loop iteration.

    Create it on the event loop's thread.
    """

    def __init__(self, member: Member) -> None:
        self._member = member
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._offsets: list[bytes] = []  # entry ids
        self._lock = threading.Lock()
        self._scheduled = False
        self._sent: asyncio.Future[Any] | None = None  # the last XACK's reply
        # "XACK <stream> <group>" without the argument count: the ids follow.
        self._head = command("XACK", member.spec.stream, member.group).split(b"\r\n", 1)[1]

    def add(self, offset: bytes) -> None:
        if threading.get_ident() == self._loop_thread:
            # No lock on the loop's thread: flush() runs there too, so it cannot interleave,
            # and a thread's add() at worst schedules a second flush, which finds nothing.
            self._offsets.append(offset)
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self.flush)
            return
        with self._lock:
            self._offsets.append(offset)
            scheduled, self._scheduled = self._scheduled, True
        if not scheduled:
            self._loop.call_soon_threadsafe(self.flush)

    def add_here(self, offset: bytes) -> None:
        """:meth:`add` on the event loop's thread (the caller knows)."""
        self._offsets.append(offset)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> asyncio.Future[Any] | None:
        """Send the acks queued so far (event-loop thread); the XACK's reply, if any."""
        with self._lock:
            offsets, self._offsets = self._offsets, []
            self._scheduled = False
        if not offsets:
            return None
        m = self._member
        link = m.scripts.link
        ids = bulk_strings(offsets)
        try:
            assert link.loop is not None
            fut: asyncio.Future[Any] = link.loop.create_future()
            link.send_nowait(b"*%d\r\n%b%b" % (len(offsets) + 3, self._head, ids), [fut])
        except HeraldError as exc:
            log.warning("consumer %s: %d acks not sent: %s", m.name, len(offsets), exc)
            return None
        fut.add_done_callback(self._done)
        self._sent = fut
        return fut

    async def confirm(self) -> None:
        """Send the queued acks now and wait for the server.

        The ack to confirm may already be on its way (a flush scheduled by ``add`` runs before
        this): then wait for the last XACK sent, whose reply comes after it on the connection.
        """
        fut = self.flush() or self._sent
        if fut is not None:
            await asyncio.shield(fut)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None and not isinstance(exc, ClientClosed):
            log.warning("consumer %s: ack failed (redelivery follows): %s", self._member.name, exc)
