"""The command tap's parsing of ``MONITOR`` lines (sans-I/O; the tap itself runs against real
servers in tests/test_cli_monitor.py)."""

from __future__ import annotations

from herald._io.tap import key_topic, parse_line, wanted


def test_a_monitor_line_is_parsed_with_its_escapes() -> None:
    raw = rb'1700000000.250000 [3 127.0.0.1:50312] "PUBLISH" "a b" "\xffHR\x01\"q\"\\\n"'
    line = parse_line(raw, "n1:6379")
    assert line is not None
    assert line.time == 1700000000.25
    assert (line.db, line.client, line.node) == (3, "127.0.0.1:50312", "n1:6379")
    assert line.args == (b"PUBLISH", b"a b", b'\xffHR\x01"q"\\\n')
    assert line.topics() == ["a b"]
    assert parse_line(b"OK", "n") is None
    assert parse_line(b'1.0 [0 lua] "unterminated', "n") is None


def test_herald_keys_name_their_topic() -> None:
    assert key_topic(b"herald:{orders}:s") == "orders"
    assert key_topic(b"herald:{orders}.dead:s") == "orders.dead"
    assert key_topic(b"herald:{herald}:topics") == ""
    assert key_topic(b"session:42") is None
    line = parse_line(b'1.0 [0 lua] "XADD" "herald:{orders}:s" "*" "m" "x"', "n")
    assert line is not None
    assert line.topics() == ["orders"]
    assert wanted(line, "ord*")
    assert not wanted(line, "prices")
    other = parse_line(b'1.0 [0 127.0.0.1:1] "GET" "session:42"', "n")
    assert other is not None
    assert not wanted(other, None)
    sub = parse_line(b'1.0 [0 127.0.0.1:1] "SUBSCRIBE" "a" "b"', "n")
    assert sub is not None
    assert sub.topics() == ["a", "b"]
    assert wanted(sub, "b")


def test_the_policy_version_poll_is_shown_only_when_asked() -> None:
    poll = parse_line(b'1.0 [0 127.0.0.1:1] "GET" "herald:{herald}:topics:version"', "n")
    assert poll is not None
    assert not wanted(poll, None)
    assert wanted(poll, None, polls=True)
