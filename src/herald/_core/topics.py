"""Topic names and glob patterns (sans-I/O).

A *topic* is a UTF-8 name such as ``news.sport``. A *pattern* is a topic with at least one glob
metacharacter (``*``, ``?``, ``[``) and matches topics exactly as Redis' ``stringmatchlen`` does
for PSUBSCRIBE, which :func:`match` reproduces byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from herald._errors import InvalidTopic, ReservedName

MAX_TOPIC_BYTES = 1024
_GLOB = frozenset("*?[")
# Braces would break the hash tag of the topic's keys (``herald:{topic}:...``); whitespace and
# control characters make topics unprintable in the CLI and logs.
_FORBIDDEN = frozenset("{}") | frozenset(chr(c) for c in range(33)) | {"\x7f"}


# Herald's own names (docs/wire-format.md): header names starting with RESERVED_HEADER, and the
# reply inboxes' channels, which only Herald's request machinery subscribes and publishes to.
RESERVED_HEADER = "herald-"
INBOX_PREFIX = "_herald.inbox."
_INBOX_STEM = INBOX_PREFIX[:-1]  # "_herald.inbox*" is refused as well as "_herald.inbox.*"
INBOX_PREFIX_RAW = INBOX_PREFIX.encode()


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse header names reserved for Herald (any case: HTTP header names are not cased)."""
    for key in headers:
        if isinstance(key, str) and key[:7].lower() == RESERVED_HEADER:
            raise ReservedName(key, f"header names starting with {RESERVED_HEADER!r} are Herald's")


def is_inbox(name: str) -> bool:
    """Whether ``name`` is in the reply inbox namespace (a channel, or a pattern there)."""
    return name.startswith(_INBOX_STEM)


def check_user_name(name: object) -> None:
    """Refuse a user publish or subscribe to the reply inbox namespace."""
    if isinstance(name, str) and name.startswith(_INBOX_STEM):
        raise ReservedName(name, f"{INBOX_PREFIX}* holds the reply inboxes of requests")


def is_pattern(name: str) -> bool:
    """Whether ``name`` contains a glob metacharacter (``*``, ``?``, ``[``): a subscription to
    it is a pattern subscription (PSUBSCRIBE), and only a topic, never a pattern, can be
    published to.

    >>> is_pattern("news.*"), is_pattern("news.sport")
    (True, False)
    """
    return not _GLOB.isdisjoint(name)


def validate_topic(topic: object) -> bytes:
    """Check a topic to publish to; return its UTF-8 bytes."""
    raw = _validate(topic)
    name = cast(str, topic)  # _validate refused anything else
    if is_pattern(name) or "\\" in name:
        raise InvalidTopic(name, "glob characters * ? [ and \\ are for subscribe patterns only")
    return raw


def validate_subscription(name: object) -> bytes:
    """Check a topic or pattern to subscribe to; return its UTF-8 bytes."""
    return _validate(name)


# The checks take `object`: they refuse a wrong type themselves, with their own error; typed `str`,
# a compiled core (mypyc) would refuse it first with a TypeError of its own.
def _validate(name: object) -> bytes:
    if not isinstance(name, str):
        raise InvalidTopic(repr(name), f"must be str, not {type(name).__name__}")
    if not name:
        raise InvalidTopic(name, "must not be empty")
    if not _FORBIDDEN.isdisjoint(name):
        raise InvalidTopic(name, "must not contain whitespace, control characters, { or }")
    try:
        raw = name.encode()
    except UnicodeEncodeError as exc:
        raise InvalidTopic(name, "must be valid UTF-8") from exc
    if len(raw) > MAX_TOPIC_BYTES:
        raise InvalidTopic(name, f"longer than {MAX_TOPIC_BYTES} bytes")
    return raw


def match(pattern: str | bytes, topic: str | bytes) -> bool:
    """Whether ``topic`` matches the glob ``pattern`` with Redis' exact semantics.

    >>> match("news.*", "news.sport")
    True
    """
    p = pattern.encode() if isinstance(pattern, str) else pattern
    s = topic.encode() if isinstance(topic, str) else topic
    return _match(p, 0, s, 0, [False], 0)


def _signed(c: int) -> int:
    # The C code compares ``char`` values, which are signed on the platforms Redis runs on.
    return c - 256 if c > 127 else c


def _match(p: bytes, pi: int, s: bytes, si: int, skip_longer: list[bool], nesting: int) -> bool:
    """Port of ``stringmatchlen_impl`` from Valkey's util.c (including the CVE-2022-36021 guard).

    ``p[i]`` past the end reads as NUL, as the C code reads the string terminator.
    """
    if nesting > 1000:
        return False
    plen = len(p)
    slen = len(s)

    def pc(i: int) -> int:
        return p[i] if i < plen else 0

    while pi < plen and si < slen:
        c = p[pi]
        if c == 0x2A:  # '*'
            while pi < plen and pc(pi + 1) == 0x2A:
                pi += 1
            if plen - pi == 1:
                return True
            while si < slen:
                if _match(p, pi + 1, s, si, skip_longer, nesting + 1):
                    return True
                if skip_longer[0]:
                    return False
                si += 1
            skip_longer[0] = True
            return False
        if c == 0x3F:  # '?'
            si += 1
        elif c == 0x5B:  # '['
            pi += 1
            negate = pc(pi) == 0x5E  # '^'
            if negate:
                pi += 1
            matched = False
            sc = s[si]
            while True:
                if pc(pi) == 0x5C and plen - pi >= 2:  # '\\'
                    pi += 1
                    if pc(pi) == sc:
                        matched = True
                elif pc(pi) == 0x5D:  # ']'
                    break
                elif plen - pi <= 0:
                    pi -= 1
                    break
                elif plen - pi >= 3 and pc(pi + 1) == 0x2D:  # '-'
                    start, end = _signed(pc(pi)), _signed(pc(pi + 2))
                    if start > end:
                        start, end = end, start
                    pi += 2
                    if start <= _signed(sc) <= end:
                        matched = True
                elif pc(pi) == sc:
                    matched = True
                pi += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            si += 1
        else:
            if c == 0x5C and plen - pi >= 2:  # '\\'
                pi += 1
            if pc(pi) != s[si]:
                return False
            si += 1
        pi += 1
        if si == slen:
            while pi < plen and p[pi] == 0x2A:
                pi += 1
            break
    return pi >= plen and si == slen
