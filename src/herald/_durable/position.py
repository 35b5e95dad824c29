"""Finding a consumer group's position trimmed away: entries it had not read yet were removed.

Retention never trims unacked entries unless ``trim_unacked`` is set, but with it (or an XTRIM
or XDEL by another program) entries after a group's last delivered id can go before the group
reads them. Without a check the group would just read on from the first entry left: silence.

The server knows how many entries were ever added to the stream and how many a group has read
(Redis 7+ and Valkey, when it can count them), and reports the difference as the group's
``lag``: the entries it has yet to read. At most ``XLEN`` of them can still be there (all, while
the group is before the stream's first entry), so::

    lost = lag - XLEN      (when > 0: that many entries went before the group read them)

The check is a transaction (``MULTI``, ``XINFO GROUPS``, ``XLEN``, ``EXEC``: atomic, like a
script) queued on the consumer's read connection right before each XREADGROUP (no extra round
trip): it must run before the read, because a read past the first entry makes the server count
again and the loss no longer shows. It costs a few microseconds of server time per read; the
script it replaces cost 35-55 us per call (a script call's fixed cost), up to 0.5 us per
message at reads of 100. The verdict is worked out here. Only on a loss is the stream's first
entry read (after the read: reads do not move it, trims only move it on), to report where the
stream now starts and to rule out a group already past it. A group whose reads the server
cannot count (``lag`` is nil: entries deleted after its position, or a group created in the
middle of the stream that has not caught up yet) is not checked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from herald._core.resp import command
from herald._errors import HeraldError, PositionTrimmed
from herald._io.interface import Connection

log = logging.getLogger("herald")


class PositionCheck:
    """Queues the check ahead of a group's reads on one connection and judges its answer."""

    def __init__(self, link: Connection, topic: str, stream: str, group: str) -> None:
        self.link = link
        self.topic = topic
        self.stream = stream
        self.group = group
        self._name = group.encode()
        self._data = b"".join(
            (
                command("MULTI"),
                command("XINFO", "GROUPS", stream),
                command("XLEN", stream),
                command("EXEC"),
            )
        )

    def queue(self) -> asyncio.Future[Any] | None:
        """Send the check now (before the read it guards); ``None`` if it cannot be sent."""
        link = self.link
        # On a cluster, straight to the node of the stream's slot, where the read goes too (a
        # transaction is not routed by its first command's key: MULTI has none).
        node = link.link_for_key(self.stream)
        assert node.loop is not None
        fut: asyncio.Future[Any] = node.loop.create_future()
        # Marked retrieved at once: when the read fails (the connection closed), nobody asks
        # for the verdict and asyncio would log "Future exception was never retrieved".
        fut.add_done_callback(_ignore)
        try:
            node.send_nowait(self._data, [None, None, None, fut])
        except HeraldError as exc:  # e.g. the connection closed meanwhile: the read will say so
            log.debug("position check not sent: %s", exc)
            return None
        return fut

    async def verdict(self, fut: asyncio.Future[Any] | None) -> PositionTrimmed | None:
        """The loss the check found, if any (its reply came before the read's)."""
        if fut is None or not fut.done() or fut.cancelled():
            return None
        exc = fut.exception()
        if exc is not None:  # EXECABORT (a slot moved, ...): no verdict this time
            log.debug("position check of %s/%s failed: %s", self.topic, self.group, exc)
            return None
        groups, length = fut.result()
        if not isinstance(groups, list) or not isinstance(length, int):
            return None  # no stream (XINFO's error inside EXEC's reply)
        for fields in groups:
            info = dict(zip(fields[::2], fields[1::2], strict=True))
            if info.get(b"name") != self._name:
                continue
            lag, position = info.get(b"lag"), info.get(b"last-delivered-id")
            if lag is None or position is None:
                return None  # the server cannot count this group's reads
            lost = int(lag) - length
            if lost <= 0:
                return None
            try:
                head = await self.link.execute("XRANGE", self.stream, "-", "+", "COUNT", 1)
            except HeraldError as exc:
                log.debug("position check of %s/%s: %s", self.topic, self.group, exc)
                return None
            first = head[0][0].decode() if head else None
            # Only while before the first entry: a server that does not count again after a
            # read (Redis 7.2) would report the same loss again.
            if first is not None and not _before(position.decode(), first):
                return None
            return PositionTrimmed(self.topic, self.group, position.decode(), first, lost)
        return None


def _before(a: str, b: str) -> bool:
    """Stream id ``a`` comes before ``b``."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) < (int(bms), int(bseq or 0))


def _ignore(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed check means no verdict
