"""Durable topics, sans-I/O: key names, Lua scripts as text, reply parsing, redelivery delays.

A durable topic ``orders`` lives in keys hash-tagged by topic (one cluster slot per topic):

- ``herald:{orders}:s``: the stream; each entry holds the v1 frame in field ``m`` (``k`` is
  reserved for an ordering key; fields named ``herald-*`` carry Herald's metadata).
- ``herald:{orders}:d:<msg_id>``: a publisher's idempotency key, the first entry id, for the
  dedup window.

Dead letters go to the topic ``orders.dead``. Its keys carry the *original* topic's hash tag
(``herald:{orders}.dead:s``) so that a script can move an entry from one stream to the other
atomically on a cluster too. See ``docs/durable.md``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from herald._errors import ConfigurationError, DecodeError

from .durable_message import DurableMessage, Settler, durable_message
from .message import Message
from .resp import head
from .wire import CODEC_BYTES, CODEC_JSON, FLAG_BATCH, HEAD_SIZE, JSON_PLAIN, MAGIC, decode
from .wire import _json_decode as json_decode

DEAD_SUFFIX = ".dead"
TOPICS_KEY = "herald:{herald}:topics"  # hash: topic -> JSON policy; {herald}: one slot
TOPICS_VERSION_KEY = "herald:{herald}:topics:version"  # incremented by every declare/delete
META_PREFIX = "herald-"  # stream fields (and message headers) reserved for Herald's metadata
# XCLAIM IDLE for entries handed back: claimable at once by any ack_wait below ~115 days. The
# server replaces an idle time larger than its clock with "now", so this cannot be "infinite".
HANDBACK_IDLE_MS = 10**10
TRIM_EVERY = 100  # a publisher trims a topic every this many publishes...
TRIM_PERIOD = 1.0  # ...or when this many seconds passed since its last trim of the topic
TRIM_SCAN = 1000  # entries one trim step may remove for max_len (later steps catch up)
_new = Message.__new__  # object.__new__, unless Message is compiled (then its own)


def tagged(topic: str) -> str:
    # "orders.dead.dead" -> "{orders}.dead.dead": dead letters share their topic's slot.
    root = topic
    while root.endswith(DEAD_SUFFIX) and len(root) > len(DEAD_SUFFIX):
        root = root[: -len(DEAD_SUFFIX)]
    return f"herald:{{{root}}}{topic[len(root) :]}"


def stream_key(topic: str) -> str:
    """The stream of a durable topic: ``herald:{orders}:s``."""
    return f"{tagged(topic)}:s"


def dedup_key(topic: str, msg_id: str) -> str:
    """A publisher's idempotency key: ``herald:{orders}:d:<msg_id>``."""
    return f"{tagged(topic)}:d:{msg_id}"


def dedup_pattern(topic: str) -> str:
    """SCAN pattern of a topic's idempotency keys (topics never contain glob characters)."""
    return f"{tagged(topic)}:d:*"


def dead_topic(topic: str) -> str:
    return topic + DEAD_SUFFIX


def validate_msg_id(msg_id: object) -> str:
    if not isinstance(msg_id, str) or not msg_id or len(msg_id) > 1024:
        raise ConfigurationError("msg_id must be a non-empty str of at most 1024 characters")
    return msg_id


def check_policy(
    durable: bool,
    max_len: object,  # checked here (typed int, a compiled core would refuse it first)
    max_age: float | None,
    dedup_window: float,
    trim_unacked: bool,
) -> None:
    """Refuse retention options that make no sense before anything is stored."""
    if not durable and (max_len is not None or max_age is not None or trim_unacked):
        raise ConfigurationError("max_len, max_age and trim_unacked apply to durable topics")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int)):
        raise ConfigurationError("max_len must be an int")
    if max_len is not None and max_len < 0:
        raise ConfigurationError("max_len must be >= 0")
    if max_age is not None and not max_age > 0:
        raise ConfigurationError("max_age must be > 0 seconds")
    if not dedup_window >= 0:
        raise ConfigurationError("dedup_window must be >= 0 seconds")


def differing_fields(current: Any, wanted: Any) -> list[str]:
    """Names of the fields of two structs of one type whose values differ."""
    return [f for f in current.__struct_fields__ if getattr(current, f) != getattr(wanted, f)]


class DurableTopic:
    """What publishers and consumers need of one durable topic's policy.

    Publishers keep one per topic in their policy cache; it counts publishes to decide when the
    publish script also trims (every :data:`TRIM_EVERY` publishes or :data:`TRIM_PERIOD`).
    """

    __slots__ = (
        "_append_head",
        "_count",
        "_last_trim",
        "_publish_head",
        "dead_channel",
        "dead_json",
        "dead_stream",
        "dedup_ms",
        "fsync",
        "max_age_ms",
        "max_len",
        "policy_json",
        "publish_args",
        "stream",
        "stream_raw",
        "topic",
        "trim_args",
        "trim_unacked",
    )

    def __init__(
        self,
        topic: str,
        *,
        max_len: int | None,
        max_age: float | None,
        dedup_window: float,
        trim_unacked: bool,
        policy_json: bytes,
        dead_json: bytes,
        fsync: bool = False,
    ) -> None:
        self.topic = topic
        self.fsync = fsync  # confirmed publishes wait for the AOF fsync (WAITAOF)
        self.stream = stream_key(topic)
        self.stream_raw = self.stream.encode()
        self.dead_channel = dead_topic(topic)
        self.dead_stream = stream_key(self.dead_channel)
        self.max_len = max_len
        self.max_age_ms = None if max_age is None else int(max_age * 1000)
        self.dedup_ms = int(dedup_window * 1000)
        self.trim_unacked = trim_unacked
        self.policy_json = policy_json
        self.dead_json = dead_json
        # ARGV of the trim function: max_len, max_age in ms (-1: none), "1" to trim unacked.
        # Encoded once: bytes are the fast case of command encoding.
        self.trim_args: tuple[bytes, bytes, bytes] = (
            b"%d" % (-1 if max_len is None else max_len),
            b"%d" % (-1 if self.max_age_ms is None else self.max_age_ms),
            b"1" if trim_unacked else b"0",
        )
        # The publish script's ARGV before the trim flag: channel, dedup window in ms.
        self.publish_args: tuple[bytes, bytes] = (topic.encode(), b"%d" % self.dedup_ms)
        # XADD <stream> * m <frame> and PUBLISH <topic> <frame> up to the frame: a publish
        # without msg_id is these two commands, pre-encoded (see append_command).
        self._append_head = head(b"XADD", self.stream_raw, b"*", b"m")
        self._publish_head = head(b"PUBLISH", topic.encode())
        self._count = 0
        self._last_trim = time.monotonic()

    @property
    def retains(self) -> bool:
        """True when the policy limits the stream (by length or age)."""
        return self.max_len is not None or self.max_age_ms is not None

    def append_command(self, frame: bytes) -> bytes:
        """``XADD <stream> * m <frame>`` then ``PUBLISH <topic> <frame>``, encoded: a durable
        publish without idempotency key (two replies: the entry id, the receiver count)."""
        n = len(frame)
        return b"%b%d\r\n%b\r\n%b%d\r\n%b\r\n" % (
            self._append_head,
            n,
            frame,
            self._publish_head,
            n,
            frame,
        )

    def trim_due(self, count: int = 1) -> bool:
        """Called for every ``count`` publishes: True when the stream should be trimmed now."""
        if self.max_len is None and self.max_age_ms is None:
            return False
        self._count += count
        now = time.monotonic()
        if self._count >= TRIM_EVERY or now - self._last_trim >= TRIM_PERIOD:
            self._count = 0
            self._last_trim = now
            return True
        return False


# -- redelivery ------------------------------------------------------------------------------


def backoff_delay(schedule: Sequence[float] | None, deliveries: int) -> float:
    """Delay before redelivering a message that failed on delivery ``deliveries`` (1-based).

    ``schedule[i]`` is the delay after the (i+1)-th delivery; the last one repeats. No schedule
    means at once.

    >>> backoff_delay([1, 5, 30], 2), backoff_delay([1, 5, 30], 9), backoff_delay(None, 3)
    (5, 30, 0.0)
    """
    if not schedule:
        return 0.0
    return schedule[min(max(deliveries, 1), len(schedule)) - 1]


def claim_interval(ack_wait: float) -> float:
    """How often a consumer looks for entries to reclaim: often enough to honour ``ack_wait``
    and ``nak`` delays promptly, at most once a second."""
    return max(0.01, min(1.0, ack_wait / 4))


# -- replies ---------------------------------------------------------------------------------

# One entry as the scripts and XREADGROUP return it: (entry id, [field, value, ...], deliveries).
Entry = tuple[bytes, list[bytes], int]


# One entry as XREADGROUP ``>`` returns it (its first delivery): [entry id, [field, value, ...]].
ReadEntry = list[Any]


def parse_read(reply: Any) -> list[ReadEntry]:
    """Entries of an XREADGROUP reply for one stream, as the server sent them (no copy: a
    consumer reads hundreds at a time).

    An entry whose fields are ``None`` was deleted (trimmed) after delivery; the caller acks it
    away.
    """
    if not reply:
        return []
    entries: list[ReadEntry] = reply[0][1]
    return entries


def parse_claimed(reply: Any) -> tuple[bytes, list[Entry], int]:
    """(cursor, entries, dead-lettered count) from the claim and resume scripts."""
    cursor, entries, buried = reply
    return cursor, [(e[0], e[1], int(e[2])) for e in entries], int(buried)


def field(fields: list[bytes], name: bytes) -> bytes | None:
    """Value of one field in a flat [field, value, ...] list."""
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return None


def meta_headers(fields: list[bytes]) -> dict[str, str]:
    """Herald's ``herald-*`` fields of an entry (dead-letter reason, ...) as message headers."""
    out: dict[str, str] = {}
    for i in range(0, len(fields) - 1, 2):
        name = fields[i]
        if name.startswith(b"herald-"):
            out[name.decode("utf-8", "replace")] = fields[i + 1].decode("utf-8", "replace")
    return out


def fast_entry(
    topic: str, entry: bytes, fields: list[bytes], deliveries: int, consumer: Settler
) -> DurableMessage | None:
    """The message of an entry that holds only its frame, a JSON payload without headers (what
    Herald publishes by default), built in one step; ``None`` for any other entry, which
    :func:`decode_entry` handles (an invalid payload included: it reports the error)."""
    if len(fields) != 2 or fields[0] != b"m":
        return None
    frame = fields[1]
    if not frame.startswith(JSON_PLAIN):
        return None
    try:
        data = json_decode(frame[HEAD_SIZE:])  # a frame too short to hold the ids: b"", invalid
    except (msgspec.DecodeError, RecursionError):
        return None
    return durable_message(topic, data, frame, CODEC_JSON, entry, deliveries, consumer)


def read_messages(
    topic: str,
    entries: list[ReadEntry],
    consumer: Settler,
    outstanding: dict[bytes, DurableMessage],
    append: Callable[[DurableMessage], None],
    general: Callable[[bytes, list[bytes]], DurableMessage | None],
) -> int:
    """The messages of entries read for the first time, in stream order: each one ``append``-ed
    and put in ``outstanding`` (by entry id, bytes); entries already there (still being
    processed) are skipped. :func:`fast_entry` and :func:`durable_message` written out as a
    loop (a consumer's hot path, ~2 us per message: a call per entry would cost ~0.2 us of it);
    any other entry goes to ``general(entry id, fields)`` (``None``: not delivered). Returns how
    many were appended.
    """
    added = 0
    entries.reverse()  # taken from the end: each entry's lists are freed as soon as it is read
    pop = entries.pop
    while entries:
        entry_id, fields = pop()
        if entry_id in outstanding:
            continue  # still being processed; it outlived ack_wait
        msg: DurableMessage | None = None
        if fields and len(fields) == 2 and fields[0] == b"m":
            frame = fields[1]
            if frame.startswith(JSON_PLAIN):
                try:
                    data = json_decode(frame[HEAD_SIZE:])  # too short for the ids: b"", invalid
                except (msgspec.DecodeError, RecursionError):
                    pass
                else:
                    # durable_message() written out (see the docstring): a call per entry less.
                    msg = _new(DurableMessage)
                    msg.topic = topic
                    msg.data = data
                    msg.raw = frame
                    msg._codec = CODEC_JSON
                    msg._pid = None  # read from the frame when asked (Message._ids)
                    msg._seq = 0
                    msg._ts = 0
                    msg._headers = None  # a dict of its own when asked for (Message.headers)
                    msg.pattern = None
                    msg.epoch = None
                    msg.decode_error = None
                    msg.key = None
                    msg.deliveries = 1
                    msg._entry = entry_id  # the offset (DurableMessage.offset)
                    msg._consumer = consumer
                    msg._settled = False
                    msg._seen = False
        if msg is None:
            msg = general(entry_id, fields or [])
            if msg is None:
                continue
        outstanding[entry_id] = msg
        append(msg)
        added += 1
    return added


def decode_entry(topic: str, fields: list[bytes]) -> Message:
    """The message a stream entry holds: its ``m`` frame, decoded as a live subscriber would,
    with the entry's ``herald-*`` fields as headers.

    An entry another program wrote (no ``m`` field) is *foreign*, like a foreign payload on a
    channel: its data is the entry's fields as a dict of bytes, and it is not an error.
    """
    frame = field(fields, b"m")
    if frame is None:
        data = {
            fields[i]: fields[i + 1]
            for i in range(0, len(fields) - 1, 2)
            if not fields[i].startswith(b"herald-")
        }
        msg = Message(topic, data, b"", CODEC_BYTES, b"", 0, 0, None)
    elif frame[:3] == MAGIC and len(frame) > 4 and frame[4] & FLAG_BATCH:
        error = DecodeError("a stream entry holds one message, not a batch frame")
        msg = Message(topic, frame, frame, CODEC_BYTES, b"", 0, 0, None, decode_error=error)
    else:
        msg = decode(topic, frame)[0]
    if len(fields) > 2 and (meta := meta_headers(fields)):
        msg.headers = {**msg.headers, **meta}
    return msg


# -- Lua scripts -----------------------------------------------------------------------------


class Script:
    """A Lua script: its text and the SHA1 the server knows it by."""

    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text.encode()
        self.sha = hashlib.sha1(self.text).hexdigest().encode()

    def __repr__(self) -> str:
        return f"Script({self.name!r}, {self.sha[:8].decode()})"


# Entry ids are "<ms>-<seq>"; compared as number pairs (seq stays far below 2^53 in practice).
_LIB = r"""
local function idparts(id)
  local d = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1)), d
end
local function idless(a, b)
  local am, as = idparts(a)
  local bm, bs = idparts(b)
  return am < bm or (am == bm and as < bs)
end
local function idnext(id)
  local _, s, d = idparts(id)
  return string.sub(id, 1, d) .. string.format('%d', s + 1)
end
local function tomap(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Remove entries past max_len or older than max_age_ms (negative: no limit). Unless unacked,
-- never an entry some group has not acked: nothing at or after a group's oldest pending entry,
-- nothing after its last delivered one.
local function trim(stream, max_len, max_age_ms, unacked)
  local len = redis.call('XLEN', stream)
  if len == 0 then return 0 end
  local cut = false
  if max_age_ms >= 0 then
    cut = string.format('%d', math.max(now_ms() - max_age_ms, 0)) .. '-0'
  end
  if max_len >= 0 and len > max_len then
    local n = math.min(len - max_len, __TRIM_SCAN__)
    local r = redis.call('XRANGE', stream, '-', '+', 'COUNT', n + 1)
    local c
    if #r > n then c = r[n + 1][1] else c = idnext(r[#r][1]) end
    if not cut or idless(cut, c) then cut = c end
  end
  if not cut then return 0 end
  if not unacked then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local info = tomap(g)
      local safe = idnext(info['last-delivered-id'])
      if tonumber(info['pending']) > 0 then
        local p = redis.call('XPENDING', stream, info['name'])
        if p[2] and idless(p[2], safe) then safe = p[2] end
      end
      if idless(safe, cut) then cut = safe end
    end
  end
  return redis.call('XTRIM', stream, 'MINID', cut)
end

local function deliveries(stream, group, id)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if p[1] then return tonumber(p[1][4]) end
  return 1
end

-- Move one pending entry to the dead-letter stream: its fields (Herald's metadata replaced),
-- the metadata, a live publish of its frame on the dead-letter topic, and the ack.
local function bury(stream, group, id, fields, dstream, dchannel, reason, n, consumer, topic)
  local args = {'XADD', dstream, '*'}
  local frame = false
  for i = 1, #fields, 2 do
    local f = fields[i]
    if string.sub(f, 1, 7) ~= 'herald-' then
      args[#args + 1] = f
      args[#args + 1] = fields[i + 1]
      if f == 'm' then frame = fields[i + 1] end
    end
  end
  local meta = {'herald-reason', reason, 'herald-deliveries', n, 'herald-topic', topic,
                'herald-offset', id, 'herald-group', group, 'herald-consumer', consumer,
                'herald-time', string.format('%d', now_ms())}
  for i = 1, #meta do args[#args + 1] = meta[i] end
  redis.call(unpack(args))
  if frame then redis.call('PUBLISH', dchannel, frame) end
  redis.call('XACK', stream, group, id)
end

-- Entries just claimed (their delivery count already raised): dead-letter those past
-- max_deliver, ack those deleted by trimming, return the rest with their delivery counts.
local function settle(stream, group, consumer, dstream, dchannel, topic, max, entries)
  local out, buried = {}, 0
  for _, e in ipairs(entries) do
    if e and e[2] then
      local n = deliveries(stream, group, e[1])
      if n > max then
        bury(stream, group, e[1], e[2], dstream, dchannel,
             'max_deliver exceeded: delivered ' .. (n - 1) .. ' times', n - 1, consumer, topic)
        buried = buried + 1
      else
        out[#out + 1] = {e[1], e[2], n}
      end
    elseif e then
      redis.call('XACK', stream, group, e[1])
    end
  end
  return out, buried
end
""".replace("__TRIM_SCAN__", str(TRIM_SCAN))

PUBLISH = Script(
    "publish",
    _LIB
    + r"""
-- KEYS: stream [, dedup key]
-- ARGV: channel, dedup window ms, trim ("1"), max_len, max_age ms, trim unacked, frame
local dedup = KEYS[2]
if dedup then
  local first = redis.call('GET', dedup)
  if first then return {first, 1, 0} end
end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[7])
if dedup then redis.call('SET', dedup, id, 'PX', ARGV[2]) end
local receivers = redis.call('PUBLISH', ARGV[1], ARGV[7])
if ARGV[3] == '1' then trim(KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1') end
return {id, 0, receivers}
""",
)

TRIM = Script(
    "trim",
    _LIB
    + r"""
-- KEYS: stream; ARGV: max_len, max_age ms, trim unacked
return trim(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1')
""",
)

CLAIM = Script(
    "claim",
    _LIB
    + r"""
-- Reclaim entries idle for min-idle ms (another consumer died or is stuck, or a nak's delay
-- passed). KEYS: stream, dead stream
-- ARGV: group, consumer, min idle ms, cursor, count, max_deliver, topic, dead channel
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                     'COUNT', ARGV[5])
local out, buried = settle(KEYS[1], ARGV[1], ARGV[2], KEYS[2], ARGV[8], ARGV[7],
                           tonumber(ARGV[6]), r[2])
return {r[1], out, buried}
""",
)

RESUME = Script(
    "resume",
    _LIB
    + r"""
-- Re-deliver this consumer's own pending entries (a restarted consumer of the same name).
-- KEYS: stream, dead stream
-- ARGV: group, consumer, after (exclusive, "-" at first), count, max_deliver, topic, dead ch.
local start = ARGV[3]
if start ~= '-' then start = '(' .. start end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', ARGV[4], ARGV[2])
if #p == 0 then return {'0-0', {}, 0} end
local ids = {}
for i, e in ipairs(p) do ids[i] = e[1] end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))
local got = {}
for _, e in ipairs(claimed) do if e then got[e[1]] = true end end
for _, id in ipairs(ids) do  -- deleted by trimming: still pending on servers before 7.0
  if not got[id] then redis.call('XACK', KEYS[1], ARGV[1], id) end
end
local out, buried = settle(KEYS[1], ARGV[1], ARGV[2], KEYS[2], ARGV[7], ARGV[6],
                           tonumber(ARGV[5]), claimed)
local cursor = ids[#ids]
if #p < tonumber(ARGV[4]) then cursor = '0-0' end
return {cursor, out, buried}
""",
)

LEASE = Script(
    "lease",
    r"""
-- Set the idle time of entries this consumer still owns (nak with delay, in_progress, hand
-- back). An entry another consumer has reclaimed is left alone.
-- KEYS: stream; ARGV: group, consumer, idle ms, then pairs: id, retry count ("" to keep)
local n = 0
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if p[1] then
    if ARGV[i + 1] == '' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3],
                 'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
    end
    n = n + 1
  end
end
return n
""",
)

TERM = Script(
    "term",
    _LIB
    + r"""
-- Dead-letter one entry this consumer owns, now. KEYS: stream, dead stream
-- ARGV: group, consumer, id, reason, topic, dead channel
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not p[1] then return 0 end
local r = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if r[1] then
  bury(KEYS[1], ARGV[1], ARGV[3], r[1][2], KEYS[2], ARGV[6], ARGV[4], tonumber(p[1][4]),
       ARGV[2], ARGV[5])
else
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
end
return 1
""",
)

REAP = Script(
    "reap",
    r"""
-- Delete consumers idle longer than idle ms that hold no pending entry (never one with
-- pending entries: DELCONSUMER would drop them).
-- KEYS: stream; ARGV: group, idle ms, a name to keep, the only name to consider ("": any)
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local m = {}
  for i = 1, #c, 2 do m[c[i]] = c[i + 1] end
  if m['name'] ~= ARGV[3] and (ARGV[4] == '' or m['name'] == ARGV[4])
      and tonumber(m['pending']) == 0
      and tonumber(m['idle']) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], m['name'])
    n = n + 1
  end
end
return n
""",
)

DECLARE = Script(
    "declare",
    r"""
-- KEYS: topics hash, version key
-- ARGV: topic, policy JSON, update ("1"), dead-letter topic ("" for none), its policy JSON
-- Returns {1} when stored (or unchanged), {0, current JSON} on a conflict.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] and ARGV[3] ~= '1' then return {0, cur} end
local changed = false
if cur ~= ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  changed = true
end
if ARGV[4] ~= '' and redis.call('HSETNX', KEYS[1], ARGV[4], ARGV[5]) == 1 then changed = true end
if changed then redis.call('INCR', KEYS[2]) end
return {1}
""",
)

RESTORE = Script(
    "restore",
    r"""
-- After NOGROUP: tell a flushed registry (no version key: FLUSHALL) from a deleted topic.
-- KEYS: topics hash, version key; ARGV: topic, policy JSON, dead-letter topic, its JSON
-- Returns 1: restored, 0: the topic is declared, -1: the topic was deleted.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[4]) end
redis.call('INCR', KEYS[2])
return 1
""",
)
