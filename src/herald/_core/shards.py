"""Placement of topics over several independent servers (sans-I/O).

A client made with ``shards=`` (or a ``redis+shards://`` URL) spreads its topics over N
standalone or Sentinel-managed servers, each named. Every client, in every language, must put a
topic on the same server, so the function is fixed here and documented in ``docs/scaling.md``
("Shards") with test vectors (``tests/vectors/shards-v1.json``):

1. The topic's **placement key**: the topic without its trailing ``.dead`` suffixes (a topic's
   dead letters live with it: the script that dead-letters an entry runs on one server).
2. Each shard's **score**: the first 8 bytes, big-endian, of
   ``SHA-256(utf8(shard name) + b"\\n" + utf8(placement key))``.
3. The shard with the highest score owns the topic; equal scores (never seen in practice) go to
   the name that sorts first.

That is rendezvous (highest random weight) hashing: adding a shard moves to it only the topics
it now wins (about 1/N of them), removing one moves only its own topics, and the order in which
shards are listed does not matter, only their names.
"""

from __future__ import annotations

import hashlib

from herald._core.streams import DEAD_SUFFIX

_SEP = b"\n"


def placement_key(topic: str) -> str:
    """The name a topic is placed by: the topic without trailing ``.dead`` suffixes.

    >>> placement_key("orders.dead"), placement_key("orders"), placement_key(".dead")
    ('orders', 'orders', '.dead')
    """
    root = topic
    while root.endswith(DEAD_SUFFIX) and len(root) > len(DEAD_SUFFIX):
        root = root[: -len(DEAD_SUFFIX)]
    return root


def key_placement(key: bytes) -> bytes:
    """The placement key of a Redis key or channel: a topic's keys carry the topic as their hash
    tag (``herald:{orders}:s``, dead letters ``herald:{orders}.dead:s``); a channel is a topic.

    >>> key_placement(b"herald:{orders}:s"), key_placement(b"orders.dead.dead")
    (b'orders', b'orders')
    """
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return placement_key(key.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def score(name: str, key: bytes) -> int:
    """A shard's score for a placement key (step 2 of the module docstring).

    >>> score("a", b"orders") == int.from_bytes(
    ...     hashlib.sha256(b"a\\norders").digest()[:8], "big")
    True
    """
    return int.from_bytes(hashlib.sha256(name.encode() + _SEP + key).digest()[:8], "big")


def owner(names: list[str] | tuple[str, ...], key: bytes) -> int:
    """The index in ``names`` of the shard that owns the placement key ``key``."""
    best = -1
    best_score = -1
    for i, name in enumerate(names):
        s = score(name, key)
        if s > best_score or (s == best_score and name < names[best]):
            best, best_score = i, s
    return best


def shard_of(names: list[str] | tuple[str, ...], topic: str) -> str:
    """The name of the shard that holds ``topic`` (its channel, keys and policy).

    >>> shard_of(["a", "b", "c"], "orders") == shard_of(["c", "b", "a"], "orders.dead")
    True
    """
    return names[owner(names, placement_key(topic).encode())]


# Every sharded client keeps a lease on each of its shards, naming its list of shards, so that a
# client given another list is noticed (docs/scaling.md, "Adding or removing a shard").
LISTS_KEY = "herald:{herald}:shards"  # hash: "<name>\n<name>..." (sorted) -> lease end (ms)
LIST_LEASE = 30.0  # seconds; renewed every third


def list_field(names: list[str] | tuple[str, ...]) -> str:
    r"""The hash field naming a list of shards: the sorted names, one per line.

    >>> list_field(["b", "a"])
    'a\nb'
    """
    return "\n".join(sorted(names))


def other_lists(reply: list[bytes], own: str, now_ms: float) -> list[tuple[str, ...]]:
    r"""The other lists of shards with a live lease in ``reply`` (``HGETALL`` of
    :data:`LISTS_KEY`).

    >>> other_lists([b"a\nb", b"9e12", b"a\nb\nc", b"9e12", b"x", b"1"], "a\nb\nc", 5.0)
    [('a', 'b')]
    """
    it = iter(reply)
    out = []
    for field, until in zip(it, it, strict=True):
        name = field.decode("utf-8", "replace")
        try:
            live = float(until) > now_ms
        except ValueError:
            continue
        if live and name != own:
            out.append(tuple(name.split("\n")))
    return out
