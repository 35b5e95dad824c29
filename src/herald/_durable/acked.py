"""Waiting until a consumer group has settled a durable message: ``wait_acked``.

A group has settled an entry when it has delivered it (the group's last-delivered id is at or
past it) and no consumer holds it pending any more: it was acked, or dead-lettered (which acks
it in the group; the dead letter names the entry and the group, so the two can be told
apart). One script reads all three in one step, on the topic's slot (its keys share the
topic's hash tag), polled with a short backoff.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from herald._core.backoff import Backoff
from herald._core.offsets import normalize_id
from herald._core.streams import _LIB, Script, dead_topic, stream_key
from herald._durable.publish import Scripts
from herald._errors import ConfigurationError, Timeout

Settled = Literal["acked", "dead"]

# Replies: -1 no such group (or stream), 0 not delivered to the group yet, 1 pending,
# 2 acked, 3 dead-lettered by the group; an entry id: settled, and more dead letters to look
# at from there.
SETTLED = Script(
    "settled",
    _LIB
    + r"""
-- KEYS: stream, dead-letter stream; ARGV: group, entry id, where to go on looking among the
-- dead letters (a cursor this script returned; the entry id at first)
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local last = false
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then
      delivered = g[i + 1]
    end
  end
  if name == ARGV[1] then last = delivered end
end
if not last then return -1 end
if idless(last, ARGV[2]) then return 0 end
if redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1] then return 1 end
-- Settled. A dead letter is stored after the entry (its id is later): look among those, a
-- page per call (a script blocks the server): a full page without it returns a cursor.
if redis.call('EXISTS', KEYS[2]) == 1 then
  local page = redis.call('XRANGE', KEYS[2], ARGV[3], '+', 'COUNT', 1000)
  for _, e in ipairs(page) do
    local f, offset, group = e[2], false, false
    for i = 1, #f, 2 do
      if f[i] == 'herald-offset' then offset = f[i + 1]
      elseif f[i] == 'herald-group' then group = f[i + 1] end
    end
    if offset == ARGV[2] and group == ARGV[1] then return 3 end
  end
  if #page == 1000 then return page[#page][1] end
end
return 2
""",
)


async def wait_settled(
    scripts: Scripts, topic: str, offset: str, group: str, timeout: float | None
) -> Settled:
    """Poll until ``group`` has settled entry ``offset`` of durable ``topic``."""
    if not isinstance(group, str) or not group:
        raise ConfigurationError("group must be a non-empty str")
    entry = normalize_id(offset)  # ConfigurationError: not an entry id
    keys = (stream_key(topic), stream_key(dead_topic(topic)))
    backoff = Backoff(base=0.005, cap=0.1)
    try:
        async with asyncio.timeout(timeout):
            cursor = entry
            while True:
                reply = await scripts.call(SETTLED, keys, (group, entry, cursor))
                if isinstance(reply, bytes):  # settled: the next page of dead letters
                    cursor = reply.decode()
                    continue
                state = int(reply)
                if state == -1:
                    raise ConfigurationError(f"topic {topic!r} has no consumer group {group!r}")
                if state >= 2:
                    return "acked" if state == 2 else "dead"
                await asyncio.sleep(backoff.next())
    except TimeoutError:
        raise Timeout(
            f"{topic} {entry} not settled by group {group!r} within {timeout}s", timeout
        ) from None
