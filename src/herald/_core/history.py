"""Recoverable topics, the sans-I/O part: keys, the publish and read scripts, and the bookkeeping
that turns live messages and history reads into one gap-free, duplicate-free sequence per topic.

A topic declared with ``history=N`` is published by one script (``PUBLISH_HISTORY``): it takes
the next offsets from the topic's meta hash, fills offset and epoch into the envelopes, and
stores and publishes them as one frame (a batch frame for several): one stream entry per call,
id ``0-<last offset>``, trimmed to the entries that hold one of the last N offsets. The epoch
is the server time when the meta hash was created: a server that lost its data (restart
without persistence, FLUSHALL, the meta deleted) starts a new epoch, and a subscriber that
remembers the old one knows its history is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from herald._errors import ConfigurationError, HistoryLost

from .message import Message
from .resp import command
from .streams import Script, tagged
from .wire import HEAD_SIZE

# Where the 16 bytes of offset and epoch sit in an envelope encoded with offset=0, epoch=0.
OFFSET_POS = HEAD_SIZE
MAX_READ = 1000  # entries per history read
HOLD = 10 * MAX_READ  # live messages held per topic while it is recovered


def history_key(topic: str) -> str:
    """The bounded history stream of a recoverable topic: ``herald:{prices}:h``."""
    return f"{tagged(topic)}:h"


def meta_key(topic: str) -> str:
    """Offset and epoch of a recoverable topic: ``herald:{prices}:o`` (fields offset, epoch)."""
    return f"{tagged(topic)}:o"


def check_history(size: object, ttl: float | None, *, durable: bool, bare: bool) -> None:
    """Refuse history options that make no sense, before anything is stored."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigurationError("history must be an int >= 0 (messages kept)")
    if ttl is not None and not (size and ttl > 0):
        raise ConfigurationError("history_ttl needs history > 0 and must be > 0 seconds")
    if size and durable:
        raise ConfigurationError(
            "a topic is durable or recoverable, not both: durable topics keep every message "
            "in their stream already (replay, history)"
        )
    if size and bare:
        raise ConfigurationError(
            "a recoverable topic cannot be bare: its offsets travel in the envelope"
        )


class HistoryTopic:
    """How a recoverable topic is published: the script's keys and arguments, and the bytes of
    one call for a group of envelopes (:meth:`build`, used by the connection's batching: the
    publishes to a topic queued in one event-loop iteration share one script call)."""

    __slots__ = ("_head", "args", "keys", "size", "topic", "ttl")

    def __init__(self, topic: str, size: int, ttl: float | None) -> None:
        self.topic = topic
        self.size = size
        self.ttl = ttl
        self.keys = [meta_key(topic), history_key(topic)]
        ttl_ms = "0" if not ttl else str(max(1, round(ttl * 1000)))
        self.args = [topic, str(size), ttl_ms, str(OFFSET_POS)]
        whole = command(b"EVALSHA", PUBLISH_HISTORY.sha, b"2", *self.keys, *self.args)
        self._head = whole[whole.index(b"\r\n") + 2 :]  # without the argument count

    def build(self, frames: list[bytes]) -> bytes:
        parts = [b"*%d\r\n" % (9 + len(frames)), self._head]
        for f in frames:
            parts += (b"$%d\r\n" % len(f), f, b"\r\n")
        return b"".join(parts)


@dataclass
class Counters:
    """Recoverable topics' counters of all the subscriptions of a client."""

    recovered: int = 0  # messages delivered from history after a break
    duplicates: int = 0  # received twice, delivered once
    history_lost: int = 0  # HistoryLost reports
    rejected: int = 0  # not from the publish script (no offset, or one the history denies)


@dataclass(frozen=True, slots=True)
class Page:
    """One history read: the topic's epoch (``None``: no history at all), its last offset,
    the first offset still stored (``top + 1`` when none), and envelopes after the position."""

    epoch: int | None
    top: int
    first: int
    envelopes: list[bytes]


def parse_page(reply: Any) -> Page:
    epoch, top, first, envelopes = reply
    return Page(None if not epoch else int(epoch), int(top), int(first), list(envelopes))


class Track:
    """What one subscription knows of one recoverable topic."""

    __slots__ = ("epoch", "held", "lost", "offset", "pattern", "recovering", "resync")

    def __init__(self, epoch: int | None, offset: int, pattern: str | None = None) -> None:
        self.epoch = epoch
        self.offset = offset
        self.pattern = pattern  # the subscription's pattern that matched the topic, if any
        self.recovering = False  # live messages are held until a history read catches up
        self.resync = False  # a history read is due (again)
        self.held: list[Message] = []  # live messages received while recovering
        # A loss found and not yet reported: (the last offset delivered, why). It is reported
        # with the first message delivered after it, whose offset is its first_available.
        self.lost: tuple[int, str] | None = None


def accept(
    tracks: dict[str, Track], messages: list[Message], out: list[Message], stale: list[str]
) -> tuple[int, int]:
    """Sort live messages of recoverable topics: the next in sequence go to ``out``; a topic
    whose sequence broke (a jump, a new epoch) is appended to ``stale`` to be recovered, its
    messages held meanwhile (at most ``HOLD`` per topic: the rest is read from the history).
    Returns (duplicates dropped, messages rejected): a message without an offset on a topic
    tracked as recoverable did not come from its publish script and is not part of it."""
    duplicates = rejected = 0
    for m in messages:
        offset = m.offset
        t = tracks.get(m.topic)
        if not isinstance(offset, int):
            if t is None:  # a live or foreign message among recoverable ones
                out.append(m)
            else:
                rejected += 1
            continue
        if t is None:
            # First sight of a topic (a pattern's, declared after the subscription started).
            tracks[m.topic] = Track(m.epoch, offset, m.pattern)
            out.append(m)
        elif t.recovering:
            if len(t.held) < HOLD:
                t.held.append(m)
            else:
                t.resync = True  # dropped here, read from the history after the held ones
        elif m.epoch == t.epoch and offset <= t.offset:
            duplicates += 1
        elif offset == t.offset + 1 and (m.epoch == t.epoch or t.epoch is None):
            t.epoch, t.offset = m.epoch, offset  # (an unknown epoch is learnt)
            out.append(m)
        else:
            t.recovering = True
            t.held.append(m)
            stale.append(m.topic)
    return duplicates, rejected


def screen(t: Track, page: Page, n: int) -> int:
    """Drop the first ``n`` held messages (those received before ``page`` was read) that the
    page contradicts: another epoch, or an offset the topic has not reached. The publish script
    stores a message before publishing it, so a read that ran after it arrived holds it; one
    that does not was not published by the script (a raw ``PUBLISH``, a forged frame) or
    belongs to a history since lost. Returns how many were dropped."""
    if not n:
        return 0
    keep = [
        m
        for m in t.held[:n]
        if page.epoch is not None
        and m.epoch == page.epoch
        and isinstance(m.offset, int)
        and m.offset <= page.top
    ]
    rejected = n - len(keep)
    if rejected:
        t.held[:n] = keep
    return rejected


def apply_page(
    topic: str, t: Track, page: Page, decode: Any, out: list[Message], room: int = MAX_READ
) -> tuple[HistoryLost | None, bool]:
    """Bring ``t`` forward with one history read. Delivers (into ``out``, at most ``room``) the
    stored messages after its offset; returns the loss to report (if any) and whether more
    may follow (a page of ``MAX_READ`` frames, or one cut short by ``room``).

    A loss is reported once, with the page that shows it: ``last_offset`` is the last offset
    delivered before it, ``first_available`` the first delivered after it (the first message
    of this page past the hole), and delivery goes on from that page. Reading again instead
    would find the front of a history that is trimmed as fast as it is read moved on, and
    report a new loss every time."""
    if page.epoch is None:
        # No history: never published, or reset (restart without persistence, flush).
        lost = None
        last, reason = t.lost or (t.offset, "the topic's history was reset")
        if (t.epoch is not None and t.offset > 0) or t.lost is not None:
            lost = HistoryLost(topic, last, None, None, reason)
        t.epoch, t.offset, t.lost = None, 0, None
        return lost, False
    if t.epoch is not None and page.epoch != t.epoch:
        # This page was read at the old epoch's offset: read the new epoch from its start.
        if t.lost is None:
            t.lost = (t.offset, "the topic's history was reset (new epoch)")
        t.epoch, t.offset = page.epoch, 0
        return None, True
    t.epoch = page.epoch
    if page.top < t.offset:
        # The offset is ahead of the topic (a since= beyond the end): wait from the top.
        t.offset = page.top
        return None, False
    lost = None
    start = len(out)
    for frame in page.envelopes:
        for m in decode(topic, frame):
            offset = m.offset
            if not isinstance(offset, int) or offset <= t.offset:
                continue
            if len(out) >= room:
                return lost, True  # the rest on the next read, from t.offset
            if offset > t.offset + 1 or t.lost is not None:
                if lost is not None or len(out) > start:
                    # The report goes before this page's messages: a second hole (a damaged
                    # history) is the next read's, which starts at it.
                    return lost, True
                last, reason = t.lost or (t.offset, "history no longer reaches back that far")
                lost = HistoryLost(topic, last, offset, page.epoch, reason)
                t.lost = None
            t.offset = offset
            out.append(m)
    if lost is None and page.top > t.offset and page.first > t.offset + 1:
        # Nothing left after the hole (the stream expired): the next offset comes live.
        if not page.envelopes:
            last, reason = t.lost or (t.offset, "history no longer reaches back that far")
            lost = HistoryLost(topic, last, page.top + 1, page.epoch, reason)
            t.lost = None
            t.offset = page.top
    elif lost is None and t.lost is not None and not page.envelopes and page.top == t.offset:
        # A new epoch with nothing stored after the reset: what comes next is top + 1.
        last, reason = t.lost
        lost = HistoryLost(topic, last, page.top + 1, page.epoch, reason)
        t.lost = None
    return lost, len(page.envelopes) >= MAX_READ


def release(t: Track, out: list[Message]) -> int:
    """End a recovery: deliver the held live messages after the recovered offset, in order.
    Returns the duplicates dropped; leaves ``t.recovering`` set if the held ones skip ahead."""
    held, t.held = t.held, []
    t.recovering = False
    duplicates = 0
    for i, m in enumerate(held):
        assert isinstance(m.offset, int)
        if m.epoch != t.epoch and t.epoch is not None:
            t.recovering = True  # a newer epoch arrived meanwhile: recover again
        elif t.epoch is None:
            t.epoch, t.offset = m.epoch, m.offset
            out.append(m)
            continue
        elif m.offset <= t.offset:
            duplicates += 1
            continue
        elif m.offset == t.offset + 1:
            t.offset = m.offset
            out.append(m)
            continue
        else:
            t.recovering = True
        t.held = held[i:]
        break
    return duplicates


# Lua helpers: offsets and epochs as big-endian u64 (both stay below 2^53).
_U64 = r"""
local function u64(n)
  local hi = math.floor(n / 4294967296)
  return struct.pack('>I4I4', hi, n - hi * 4294967296)
end
"""

PUBLISH_HISTORY = Script(
    "publish_history",
    _U64
    + r"""
-- KEYS: meta hash, history stream
-- ARGV: channel, messages kept, ttl ms ('0': none), offset position, envelope...
-- Each envelope was encoded with offset 0 and epoch 0; this fills them in and stores and
-- publishes them as one frame (a batch frame for several): one stream entry per call, id
-- 0-<last offset>, field f its first offset. Trimming by MINID keeps every entry that holds
-- one of the last N offsets. Returns {first offset, last offset, epoch, receivers}.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
local n = #ARGV - 4
local last = redis.call('HINCRBY', KEYS[1], 'offset', n)
local first = last - n + 1
local e = u64(tonumber(epoch))
local pos = tonumber(ARGV[4])
local parts = {}
for i = 1, n do
  local env = ARGV[4 + i]
  local off = first + i - 1
  env = string.sub(env, 1, pos) .. u64(off) .. e .. string.sub(env, pos + 17)
  if n == 1 then
    parts[1] = env
  else
    parts[2 * i - 1] = struct.pack('>I4', #env)
    parts[2 * i] = env
  end
end
local frame
if n == 1 then
  frame = parts[1]
else
  frame = '\255HR' .. string.char(1, 1) .. struct.pack('>I4', n) .. table.concat(parts)
end
redis.call('XADD', KEYS[2], string.format('0-%d', last), 'f', first, 'd', frame)
local keep = last - tonumber(ARGV[2]) + 1
if keep > 1 then redis.call('XTRIM', KEYS[2], 'MINID', string.format('0-%d', keep)) end
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
local receivers = redis.call('PUBLISH', ARGV[1], frame)
return {first, last, epoch, receivers}
""",
)

READ_HISTORY = Script(
    "read_history",
    r"""
-- KEYS: meta hash, history stream; ARGV: after offset, limit
-- Returns {epoch or '', last offset, first stored offset, frames holding offsets after it}.
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local top = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first = top + 1
if #head > 0 then first = tonumber(head[1][2][2]) end
local out = {}
if tonumber(ARGV[2]) > 0 then
  -- an entry's id is its last offset: (0-<after> starts at the entry holding after + 1
  local rows = redis.call('XRANGE', KEYS[2], '(0-' .. ARGV[1], '+', 'COUNT', ARGV[2])
  for i, row in ipairs(rows) do out[i] = row[2][4] end
end
return {epoch, top, first, out}
""",
)
