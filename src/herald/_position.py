"""Finding a consumer group's position trimmed away: entries it had not read yet were removed.

Retention never trims unacked entries unless ``trim_unacked`` is set, but with it (or an XTRIM
or XDEL by another program) entries after a group's last delivered id can go before the group
reads them. Without a check the group would just read on from the first entry left: silence.

The server knows how many entries were ever added to the stream and how many a group has read
(Redis 7+ and Valkey, when it can count them), and reports the difference as the group's
``lag``: the entries it has yet to read. At most ``XLEN`` of them can still be there (all, while
the group is before the stream's first entry), so::

    lost = lag - XLEN      (when > 0: that many entries went before the group read them)

The check is a script queued on the consumer's read connection right before each XREADGROUP
(the same write, no extra round trip): it must run before the read, because a read past the
first entry makes the server count again and the loss no longer shows. It costs ~10-15 us of
server time per read (XINFO GROUPS and XLEN); the first entry is looked up only on a loss.
A group whose reads the server cannot count (``lag`` is nil: entries deleted after its
position, or a group created in the middle of the stream that has not caught up yet) is not
checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from ._errors import HeraldError, PositionTrimmed
from ._link import Link

log = logging.getLogger("herald")

_TEXT = rb"""
-- KEYS: stream; ARGV: group. Returns {0}, or {lost, last delivered id, first entry id or ''}.
-- Fields are scanned, not mapped: a table per group per read costs a quarter more.
local function idless(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local am, bm = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  if am ~= bm then return am < bm end
  return tonumber(string.sub(a, da + 1)) < tonumber(string.sub(b, db + 1))
end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups['err'] then return {0} end
for _, g in ipairs(groups) do
  local name, pos, lag
  for i = 1, #g, 2 do
    local k = g[i]
    if k == 'name' then name = g[i + 1]
    elseif k == 'last-delivered-id' then pos = g[i + 1]
    elseif k == 'lag' then lag = g[i + 1] end
  end
  if name == ARGV[1] then
    if not lag then return {0} end
    local lost = lag - redis.call('XLEN', KEYS[1])
    if lost <= 0 then return {0} end
    local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
    local first = head[1] and head[1][1]
    -- Only while before the first entry: a server that does not count again after a read
    -- (Redis 7.2) would report the same loss again.
    if first and not idless(pos, first) then return {0} end
    return {lost, pos, first or ''}
  end
end
return {0}
"""
_SHA = hashlib.sha1(_TEXT).hexdigest().encode()


class PositionCheck:
    """Queues the check ahead of a group's reads on one connection and judges its answer."""

    def __init__(self, link: Link, topic: str, stream: str, group: str) -> None:
        self.link = link
        self.topic = topic
        self.stream = stream
        self.group = group
        self._conn = -1  # the connection the script was loaded on

    def queue(self) -> asyncio.Future[Any] | None:
        """Send the check now (before the read it guards); ``None`` if it cannot be sent."""
        link = self.link
        conn = link.reconnects + (0 if link.connected else 1)
        try:
            if conn != self._conn:  # a new connection, maybe a restarted server: load it
                self._conn = conn
                link.execute("SCRIPT", "LOAD", _TEXT).add_done_callback(_ignore)
            fut = link.execute("EVALSHA", _SHA, 1, self.stream, self.group)
        except HeraldError as exc:  # e.g. the connection closed meanwhile: the read will say so
            log.debug("position check not sent: %s", exc)
            return None
        # Marked retrieved at once: when the read fails (the connection closed), nobody asks
        # for the verdict and asyncio would log "Future exception was never retrieved".
        fut.add_done_callback(_ignore)
        return fut

    def verdict(self, fut: asyncio.Future[Any] | None) -> PositionTrimmed | None:
        """The loss the check found, if any (its reply came before the read's)."""
        if fut is None or not fut.done() or fut.cancelled():
            return None
        exc = fut.exception()
        if exc is not None:
            if "NOSCRIPT" in str(exc):
                self._conn = -1  # someone flushed the scripts: load it again
            log.debug("position check of %s/%s failed: %s", self.topic, self.group, exc)
            return None
        reply = fut.result()
        lost = int(reply[0])
        if lost <= 0:
            return None
        first = reply[2].decode() or None
        return PositionTrimmed(self.topic, self.group, reply[1].decode(), first, lost)


def _ignore(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed load shows up as NOSCRIPT on the check; a failed check
        # means no verdict
