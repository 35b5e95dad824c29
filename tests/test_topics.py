"""Topic and pattern rules, and ``herald.match`` checked against the server's own matching."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import herald
from herald import EmbeddedServer, InvalidTopic

# -- validation ------------------------------------------------------------------------------

BAD_ANYWHERE = [
    ("", "empty"),
    ("news sport", "whitespace"),
    ("news\tsport", "whitespace"),
    ("news\nsport", "whitespace"),
    ("news\x00", "control"),
    ("news\x7f", "control"),
    ("news.{sport}", "{"),
    ("news.}", "}"),
    ("x" * 1025, "longer than 1024 bytes"),
    ("é" * 513, "longer than 1024 bytes"),  # 1026 bytes in 513 characters
]

GLOBS = ["news.*", "news.?", "news.[ab]", "news\\.sport"]


@pytest.mark.parametrize(("name", "reason"), BAD_ANYWHERE)
async def test_invalid_topics_are_refused_everywhere(url: str, name: str, reason: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(InvalidTopic, match="invalid topic") as info:
            await hub.publish(name, b"x")
        assert reason in info.value.reason
        assert info.value.topic == name
        with pytest.raises(InvalidTopic):
            hub.subscribe(name)
        with pytest.raises(InvalidTopic):
            await hub.declare(name, bare=True)
        assert hub.stats.published == 0


async def test_invalid_topic_in_a_list_refuses_the_whole_subscription(url: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(InvalidTopic):
            hub.subscribe("ok.topic", "not ok")


async def test_non_str_topic_is_invalid(url: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(InvalidTopic, match="must be str"):
            await hub.publish(b"news", b"x")  # type: ignore[call-overload]


def test_longest_topic_is_accepted() -> None:
    from herald._core.topics import validate_subscription, validate_topic

    assert validate_topic("x" * 1024) == b"x" * 1024
    assert validate_subscription("é" * 512) == ("é" * 512).encode()


@pytest.mark.parametrize("name", GLOBS)
async def test_glob_characters_are_for_patterns_only(url: str, name: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(InvalidTopic, match="patterns only"):
            await hub.publish(name, b"x")
        with pytest.raises(InvalidTopic, match="patterns only"):
            await hub.declare(name)
        # ...while subscribing to them is fine.
        async with hub.subscribe(name) as sub:
            assert sub.names == (name,)


def test_validation_errors_are_value_errors() -> None:
    assert issubclass(InvalidTopic, ValueError)
    assert issubclass(InvalidTopic, herald.HeraldError)


# -- match() against the server -----------------------------------------------------------------

# Single bytes, so escapes, ranges and negation combine in every way; two bytes above 0x7f
# exercise the signed-char comparison of ranges in the C code.
ALPHABET = [b"a", b"b", b"c", b"*", b"?", b"[", b"]", b"^", b"-", b"\\", b"\xe9", b"\x80"]
patterns = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=10).map(b"".join)
# Non-empty: KEYS "*" takes a fast path that also lists the empty key, which stringmatchlen
# itself (and so PSUBSCRIBE) never matches. Topics cannot be empty anyway.
strings = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=8).map(b"".join)


@pytest.fixture(scope="module")
def keys_db() -> Iterator[redis.Redis]:
    # A server of its own: KEYS lists the whole database, so nothing else may live in it.
    with EmbeddedServer(persist=False) as srv, redis.Redis(port=srv.port) as r:
        yield r


def server_matches(r: redis.Redis, pattern: bytes, candidates: set[bytes]) -> set[bytes]:
    """The candidates the server's stringmatchlen matches to ``pattern`` (KEYS uses it too)."""
    pipe = r.pipeline(transaction=False)
    pipe.flushdb()
    for s in candidates:
        pipe.set(s, b"")
    pipe.keys(pattern)
    found = pipe.execute()[-1]
    return set(found)


def herald_matches(pattern: bytes, candidates: set[bytes]) -> set[bytes]:
    return {s for s in candidates if herald.match(pattern, s)}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(pattern=patterns, others=st.sets(strings, max_size=20))
def test_match_agrees_with_the_server(
    keys_db: redis.Redis, pattern: bytes, others: set[bytes]
) -> None:
    # Random strings rarely match a random pattern; the pattern itself and the pattern without
    # its metacharacters often do, so the property sees both outcomes.
    literal = pattern.translate(None, b"*?[]\\")
    candidates = others | {pattern} | ({literal} if literal else set())
    assert herald_matches(pattern, candidates) == server_matches(keys_db, pattern, candidates)


CASES: list[tuple[bytes, bytes, bool]] = [
    (b"news.*", b"news.sport", True),
    (b"news.*", b"news.", True),
    (b"news.*", b"news", False),
    (b"*", b"x", True),
    (b"a?c", b"abc", True),
    (b"a?c", b"ac", False),
    (b"[abc]x", b"bx", True),
    (b"[^abc]x", b"bx", False),
    (b"[^abc]x", b"dx", True),
    (b"[a-c]", b"b", True),
    (b"[c-a]", b"b", True),  # reversed range
    (b"[a-c]", b"d", False),
    (b"a\\*b", b"a*b", True),
    (b"a\\*b", b"axb", False),
    (b"[\\]]", b"]", True),
    (b"[a", b"a", True),  # unterminated class
    (b"a*b*c", b"aXbYc", True),
    (b"a*b*c", b"aXbY", False),
    (b"\xe9", b"\xe9", True),
    (b"??", "é".encode(), True),  # "?" matches a byte, not a character
    (b"?", "é".encode(), False),
    (b"[\x80-a]", b"\xe9", True),  # signed chars: 0x80 (-128) <= 0xe9 (-23) <= 'a'
]


@pytest.mark.parametrize(("pattern", "s", "expected"), CASES)
def test_match_known_cases(keys_db: redis.Redis, pattern: bytes, s: bytes, expected: bool) -> None:
    assert herald.match(pattern, s) is expected
    assert server_matches(keys_db, pattern, {s}) == ({s} if expected else set())


def test_match_accepts_str_and_bytes() -> None:
    assert herald.match("news.*", b"news.sport")
    assert herald.match(b"n?ws", "news")
    # Byte semantics, as on the server: "é" is two bytes in UTF-8, so "?" cannot match it.
    assert herald.match("??", "é")
    assert not herald.match("?", "é")
    assert not herald.match("news.*", "sport")


def test_match_survives_abusive_patterns() -> None:
    # CVE-2022-36021: exponential backtracking; the port keeps the C code's guards.
    assert not herald.match("a*" * 40 + "b", "a" * 60)


# -- match() against real PSUBSCRIBE ---------------------------------------------------------

SUBSCRIBE_CASES: list[tuple[str, list[str], list[str]]] = [
    ("*", ["a", ".sport.a.b"], []),
    (".s?ort", [".sport", ".short"], [".sports", ".sort"]),
    (".[a-c]x", [".ax", ".cx"], [".dx", ".Ax"]),
    (".[^a-c]x", [".dx", ".Ax"], [".ax", ".bx"]),
    (".a\\*", [".a*"], [".ab", ".a"]),
    (".*.end", [".x.end", "..end"], [".x.end.not", ".xend"]),
]


@pytest.mark.parametrize(("suffix", "matching", "other"), SUBSCRIBE_CASES)
async def test_pattern_subscription_receives_exactly_the_matching_topics(
    url: str, topic: str, suffix: str, matching: list[str], other: list[str]
) -> None:
    pattern = topic + suffix
    async with herald.AsyncClient(url) as hub, hub.subscribe(pattern) as sub:
        for name in matching + other:
            full = topic + name
            expected = herald.match(pattern, full)
            assert expected is (name in matching), (pattern, full)
            if "*" in name:  # Herald refuses glob characters in a topic; the server does not
                receivers = await hub.execute("PUBLISH", full, name)
            else:
                receivers = (await hub.publish(full, name, confirm=True)).receivers
            assert receivers == (1 if expected else 0), (pattern, full)
        got = [await sub.next(timeout=2) for _ in matching]
        assert [m.topic for m in got] == [topic + n for n in matching]
        assert [m.data if isinstance(m.data, str) else m.data.decode() for m in got] == matching
        assert {m.pattern for m in got} == {pattern}
        assert sub.pending == 0
