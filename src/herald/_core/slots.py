"""Cluster slots, sans-I/O: key slots (CRC16 with hash tags), the slot map, MOVED/ASK replies.

A Redis/Valkey Cluster splits keys (and sharded channels) over 16384 slots; a slot is
``CRC16(key) mod 16384`` where only the part between the first ``{`` and the next ``}`` is
hashed when that part is not empty (a *hash tag*). Herald's keys of a topic are tagged with the
topic (``herald:{orders}:s``) and topics never contain braces, so a topic's channel and keys
share one slot: ``key_slot("orders") == key_slot("herald:{orders}:s")``.

Example::

    >>> key_slot("orders") == key_slot("herald:{orders}:s")
    True
    >>> key_slot("123456789")  # the CRC16/XMODEM check value 0x31C3, mod 16384
    12739
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SLOTS = 16384


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster uses."""
    crc = 0
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """The cluster slot of a key or sharded channel, honouring ``{hash tags}``."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16(raw) % SLOTS


@dataclass(frozen=True, slots=True)
class Node:
    """A cluster node's client address."""

    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Shard:
    """A primary and its replicas, with the slot ranges the primary serves."""

    primary: Node
    replicas: tuple[Node, ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()


@dataclass
class SlotMap:
    """Which primary serves each slot.

    Example::

        slots = SlotMap.from_cluster_slots(reply_of_CLUSTER_SLOTS)
        node = slots.node_for(key_slot("orders"))
    """

    shards: list[Shard] = field(default_factory=list)
    _owner: list[int] = field(default_factory=lambda: [-1] * SLOTS, repr=False)

    def __post_init__(self) -> None:
        for i, shard in enumerate(self.shards):
            for first, last in shard.ranges:
                for slot in range(first, last + 1):
                    self._owner[slot] = i

    @property
    def primaries(self) -> list[Node]:
        return [s.primary for s in self.shards]

    @property
    def nodes(self) -> list[Node]:
        """Every known node, primaries first."""
        out = [s.primary for s in self.shards]
        out += [r for s in self.shards for r in s.replicas if r not in out]
        return out

    def node_for(self, slot: int) -> Node | None:
        """The primary serving ``slot``, or ``None`` when no node serves it."""
        i = self._owner[slot]
        return None if i < 0 else self.shards[i].primary

    @property
    def complete(self) -> bool:
        """Every slot is served."""
        return -1 not in self._owner

    def moved(self, slot: int, node: Node) -> None:
        """Record a ``MOVED`` redirect: ``node`` serves ``slot`` now."""
        for i, shard in enumerate(self.shards):
            if shard.primary == node:
                self._owner[slot] = i
                return
        self.shards.append(Shard(node, (), ((slot, slot),)))
        self._owner[slot] = len(self.shards) - 1

    @classmethod
    def from_cluster_slots(cls, reply: Any, default_host: str = "127.0.0.1") -> SlotMap:
        """Parse ``CLUSTER SLOTS``: ``[[first, last, [host, port, id, ...], replicas...]]``."""
        by_primary: dict[Node, tuple[list[tuple[int, int]], list[Node]]] = {}
        for entry in reply:
            first, last, primary, *replicas = entry
            p = _node(primary, default_host)
            ranges, reps = by_primary.setdefault(p, ([], []))
            ranges.append((int(first), int(last)))
            for r in replicas:
                node = _node(r, default_host)
                if node not in reps:
                    reps.append(node)
        return cls(
            [
                Shard(p, tuple(reps), tuple(sorted(ranges)))
                for p, (ranges, reps) in by_primary.items()
            ]
        )

    @classmethod
    def from_cluster_shards(cls, reply: Any, default_host: str = "127.0.0.1") -> SlotMap:
        """Parse a ``CLUSTER SHARDS`` reply (RESP2: flat key/value lists)."""
        shards = []
        for raw_shard in reply:
            shard = _pairs(raw_shard)
            flat = [int(s) for s in shard.get("slots", [])]
            ranges = tuple(zip(flat[::2], flat[1::2], strict=True))
            primary: Node | None = None
            replicas: list[Node] = []
            for raw_node in shard.get("nodes", []):
                n = _pairs(raw_node)
                if _text(n.get("health", b"online")) != "online":
                    continue
                host = _text(n.get("ip") or n.get("endpoint") or default_host)
                if host in ("", "?"):
                    host = default_host
                node = Node(host, int(n.get("port") or n.get("tls-port") or 0))
                if _text(n.get("role", b"")) == "master":
                    primary = node
                else:
                    replicas.append(node)
            if primary is not None and ranges:
                shards.append(Shard(primary, tuple(replicas), tuple(sorted(ranges))))
        return cls(shards)


def _node(entry: Any, default_host: str) -> Node:
    host = _text(entry[0]) if entry[0] else default_host
    return Node(host if host not in ("", "?") else default_host, int(entry[1]))


def _pairs(flat: Any) -> dict[str, Any]:
    if isinstance(flat, dict):
        return {_text(k): v for k, v in flat.items()}
    it = iter(flat)
    return {_text(k): v for k, v in zip(it, it, strict=True)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Redirect:
    """A ``MOVED`` or ``ASK`` error reply: the slot is served (or, for ASK, being imported) by
    ``node``."""

    kind: Literal["MOVED", "ASK"]
    slot: int
    node: Node


def parse_redirect(reply: str, default_host: str = "127.0.0.1") -> Redirect | None:
    """Parse ``MOVED 3999 127.0.0.1:6381`` or ``ASK 3999 127.0.0.1:6381``; ``None`` otherwise.

    >>> parse_redirect("MOVED 3999 10.0.0.2:6381")
    Redirect(kind='MOVED', slot=3999, node=Node(host='10.0.0.2', port=6381))
    """
    parts = reply.split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    try:
        slot, port_n = int(parts[1]), int(port)
    except ValueError:
        return None
    kind: Literal["MOVED", "ASK"] = "MOVED" if parts[0] == "MOVED" else "ASK"
    return Redirect(kind, slot, Node(host or default_host, port_n))


# -- which key a command is routed by --------------------------------------------------------

_KEYLESS = frozenset(
    (
        b"PING", b"PUBLISH", b"SCRIPT", b"INFO", b"CONFIG", b"CLUSTER", b"HELLO", b"CLIENT",
        b"ECHO", b"TIME", b"DBSIZE", b"FLUSHALL", b"FLUSHDB", b"SUBSCRIBE", b"PSUBSCRIBE",
        b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"PUBSUB", b"ACL", b"FUNCTION", b"WAIT", b"WAITAOF",
    )
)  # fmt: skip


def command_key(args: tuple[Any, ...] | list[Any]) -> bytes | None:
    """The argument a command is routed by (its first key, or a sharded channel), or ``None``
    for a command any node can serve.

    >>> command_key(("EVALSHA", "abc", 1, "herald:{orders}:s", "x"))
    b'herald:{orders}:s'
    >>> command_key(("XREADGROUP", "GROUP", "g", "c", "STREAMS", "herald:{a}:s", ">"))
    b'herald:{a}:s'
    """
    if not args:
        return None
    name = _raw(args[0]).upper()
    if name in _KEYLESS:
        return None
    if name in (b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"):
        if len(args) > 3 and int(args[2]) > 0:
            return _raw(args[3])
        return None
    if name in (b"XREAD", b"XREADGROUP"):
        for i, a in enumerate(args):
            if _raw(a).upper() == b"STREAMS" and i + 1 < len(args):
                return _raw(args[i + 1])
        return None
    if name in (b"XINFO", b"XGROUP", b"OBJECT", b"MEMORY"):  # subcommand, then the key
        return _raw(args[2]) if len(args) > 2 else None
    if name == b"SCAN":
        # SCAN runs on one node: with a hash-tagged MATCH (a topic's keys), on the tag's node.
        for i, a in enumerate(args[:-1]):
            if _raw(a).upper() == b"MATCH":
                pattern = _raw(args[i + 1])
                start = pattern.find(b"{")
                if 0 <= start < pattern.find(b"}", start + 2):
                    return pattern
        return None
    return _raw(args[1]) if len(args) > 1 else None


# Commands with several keys (the common ones): enough to refuse keys on two shards.
_ALL_KEYS = frozenset(
    (
        b"DEL", b"UNLINK", b"EXISTS", b"TOUCH", b"MGET", b"SINTER", b"SUNION", b"SDIFF",
        b"SINTERSTORE", b"SUNIONSTORE", b"SDIFFSTORE", b"PFCOUNT", b"PFMERGE",
    )
)  # fmt: skip
_TWO_KEYS = frozenset(
    (b"RENAME", b"RENAMENX", b"SMOVE", b"LMOVE", b"RPOPLPUSH", b"BRPOPLPUSH", b"BLMOVE", b"COPY")
)
_BLOCKING_POPS = frozenset((b"BLPOP", b"BRPOP", b"BZPOPMIN", b"BZPOPMAX"))


def command_keys(args: tuple[Any, ...] | list[Any]) -> list[bytes]:
    """Every key of a multi-key command Herald knows (``MSET``, ``DEL``, ``RENAME``...), else
    :func:`command_key`'s one (or none).

    >>> command_keys(("MSET", "a", 1, "b", 2)), command_keys(("RENAME", "a", "b"))
    ([b'a', b'b'], [b'a', b'b'])
    """
    if not args:
        return []
    name = _raw(args[0]).upper()
    if name in _ALL_KEYS:
        return [_raw(a) for a in args[1:]]
    if name in (b"MSET", b"MSETNX"):
        return [_raw(a) for a in args[1::2]]
    if name in _TWO_KEYS:
        return [_raw(a) for a in args[1:3]]
    if name in _BLOCKING_POPS:
        return [_raw(a) for a in args[1:-1]]
    if name in (b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"):
        try:
            return [_raw(a) for a in args[3 : 3 + int(args[2])]]
        except (IndexError, ValueError):
            return []
    key = command_key(args)
    return [] if key is None else [key]


def encoded_key(data: bytes) -> bytes | None:
    """:func:`command_key` of the first command in RESP-encoded ``data`` (pre-encoded
    pipelines: a durable publish's ``XADD`` + ``PUBLISH``, acks)."""
    # Enough arguments to find the key: EVALSHA's is the 4th; XREADGROUP is never pre-encoded.
    args, _ = _read_command(data, 0, most=4)
    return command_key(args)


def split_commands(data: bytes) -> list[tuple[bytes, ...]]:
    """The commands (argument tuples) in RESP-encoded ``data``.

    >>> split_commands(b"*1\\r\\n$4\\r\\nPING\\r\\n*2\\r\\n$4\\r\\nECHO\\r\\n$1\\r\\nx\\r\\n")
    [(b'PING',), (b'ECHO', b'x')]
    """
    out = []
    pos = 0
    while pos < len(data):
        args, pos = _read_command(data, pos)
        out.append(tuple(args))
    return out


def _read_command(data: bytes, pos: int, most: int | None = None) -> tuple[list[bytes], int]:
    """The arguments of the RESP array at ``pos`` (its first ``most`` only, if given) and the
    position after the last one read."""
    end = data.index(b"\r\n", pos)
    count = int(data[pos + 1 : end])
    pos = end + 2
    args = []
    for _ in range(count if most is None else min(count, most)):
        end = data.index(b"\r\n", pos)
        size = int(data[pos + 1 : end])
        args.append(data[end + 2 : end + 2 + size])
        pos = end + 4 + size
    return args, pos


def _raw(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()
