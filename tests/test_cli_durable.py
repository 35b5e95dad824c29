"""``herald topics``, ``herald dead`` and ``herald replay``, run as a user runs them: real
processes against the session's server."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import herald

HERALD = [sys.executable, "-m", "herald.cli"]


def run(*args: str, url: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HERALD, *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
        input=stdin,
    )


def ok(*args: str, url: str) -> str:
    out = run(*args, url=url)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_help_lists_the_durable_commands() -> None:
    out = subprocess.run([*HERALD, "--help"], capture_output=True, text=True, timeout=30)
    for command in ("topics", "dead", "replay"):
        assert command in out.stdout


def test_topics_declare_list_show_delete(url: str, topic: str) -> None:
    out = ok(
        "topics", "declare", topic, "--durable", "--max-age", "7d", "--max-len", "1000", url=url
    )
    for part in ("durable", "max_age=7d", "max_len=1000", f"{topic}.dead"):
        assert part in out
    # the same again is fine; different settings name the field and fail, until --update
    ok("topics", "declare", topic, "--durable", "--max-age", "604800", "--max-len", "1000", url=url)
    conflict = run("topics", "declare", topic, "--durable", url=url)
    assert conflict.returncode == 1
    assert "max_len=1000 (not None)" in conflict.stderr
    ok("topics", "declare", topic, "--durable", "--max-age", "1h", "--update", url=url)
    bad = run("topics", "declare", topic, "--max-age", "soon", url=url)
    assert bad.returncode == 2
    assert "duration" in bad.stderr
    ok("topics", "declare", f"{topic}.legacy", "--bare", url=url)

    with herald.Client(url) as hub:
        for i in range(5):
            hub.publish(topic, i)
        with hub.consume(topic, "billing", "worker-1", start="all", auto_ack=False) as c:
            c.next(5).term("bad")
            c.next(5).ack()
        # closed: what it still held stays pending under its name, for the others to claim
        pending = hub.topic_info(topic).pending
        assert pending > 0
        listed = ok("topics", "list", url=url)
        shown = ok("topics", "show", topic, url=url)
    row = next(line for line in listed.splitlines() if line.split()[:1] == [topic])
    # entries, groups, pending, dead letters
    assert row.split()[-4:] == ["5", "1", str(pending), "1"]
    assert "max_age=1h" in row
    legacy = next(line for line in listed.splitlines() if f"{topic}.legacy" in line)
    assert "bare" in legacy
    assert "entries       5" in shown
    assert "billing" in shown
    assert "worker-1" in shown
    assert "dead letters  1" in shown

    refused = run("topics", "delete", topic, url=url, stdin="n\n")
    assert refused.returncode == 1
    assert "Aborted" in refused.stderr
    assert "deleted" in ok("topics", "delete", topic, "--yes", url=url)
    missing = run("topics", "show", topic, url=url)
    assert missing.returncode == 1
    assert "not declared" in missing.stderr


def test_dead_list_and_replay(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        for i in range(3):
            hub.publish(topic, {"n": i}, key=f"customer-{i}")
        with hub.consume(topic, "billing", "w1", start="all", auto_ack=False) as c:
            for _ in range(3):
                msg = c.next(5)
                if msg.data["n"]:
                    msg.term(f"card [{msg.data['n']}] declined")
                else:
                    msg.ack()
        text = ok("dead", "list", topic, url=url)
        assert "card [1] declined" in text  # not taken for markup
        assert "billing/w1" in text
        assert '{"n": 1}' in text
        records = [
            json.loads(line) for line in ok("dead", "list", topic, "--json", url=url).splitlines()
        ]
        assert [(r["data"], r["reason"], r["deliveries"]) for r in records] == [
            ({"n": 1}, "card [1] declined", 1),
            ({"n": 2}, "card [2] declined", 1),
        ]
        assert records[0]["key"] == "customer-1"
        assert (records[0]["group"], records[0]["consumer"]) == ("billing", "w1")
        assert len(ok("dead", "list", topic, "--json", "--limit", "1", url=url).splitlines()) == 1

        usage = run("dead", "replay", topic, url=url)
        assert usage.returncode == 2
        assert "--all" in usage.stderr
        one = ok("dead", "replay", topic, "--id", records[0]["offset"], url=url)
        assert "put 1 dead letter(s) back" in one
        again = run("dead", "replay", topic, "--id", records[0]["offset"], url=url)
        assert "put 0 dead letter(s) back" in again.stdout  # idempotent
        assert "not found" in again.stderr
        assert "put 1 dead letter(s) back" in ok("dead", "replay", topic, "--all", url=url)
        assert hub.dead_letters(topic) == []
        with hub.consume(topic, "billing", "w1") as c:
            back = [c.next(5) for _ in range(2)]
        assert [(m.data, m.key) for m in back] == [
            ({"n": 1}, "customer-1"),
            ({"n": 2}, "customer-2"),
        ]


def test_replay_from_an_offset_or_a_time(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        acks = [hub.publish(topic, {"n": i}, key="k", confirm=True) for i in range(6)]
    offsets = [str(a.offset) for a in acks]
    records = [json.loads(line) for line in ok("replay", topic, "--json", url=url).splitlines()]
    assert [r["data"]["n"] for r in records] == list(range(6))
    assert (records[0]["offset"], records[0]["key"]) == (offsets[0], "k")
    assert records[0]["id"]
    # --from an offset includes it; --count stops early
    out = ok("replay", topic, "--from", offsets[2], "--count", "2", "--json", url=url)
    assert [json.loads(line)["data"]["n"] for line in out.splitlines()] == [2, 3]
    # --from an ISO time: everything stored at or after it
    stored = records[3]["stored_at"]
    iso = datetime.fromtimestamp(stored).isoformat()
    lines = ok("replay", topic, "--from", iso, "--json", url=url).splitlines()
    since = [json.loads(line) for line in lines]
    assert offsets[3] in [r["offset"] for r in since]
    assert all(r["stored_at"] >= stored for r in since)  # same millisecond or later
    assert since[-1]["data"]["n"] == 5
    text = run("replay", topic, "--until", offsets[1], url=url)
    assert text.returncode == 0
    assert '{"n": 0}' in text.stdout
    assert '{"n": 2}' not in text.stdout
    assert "2 message(s)" in text.stderr
    bad = run("replay", topic, "--from", "last tuesday", url=url)
    assert bad.returncode == 2
    assert "ISO time" in bad.stderr
    live = run("replay", f"{topic}.nothing", url=url)
    assert live.returncode == 1
    assert "not durable" in live.stderr


def test_replay_json_tells_bytes_from_a_base64_looking_json_value(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        hub.publish(topic, b"\xff\x00", confirm=True)
        hub.publish(topic, {"base64": "/wA="}, confirm=True)
    first, second = (
        json.loads(line) for line in ok("replay", topic, "--json", url=url).splitlines()
    )
    assert (first.get("data"), first["data_b64"]) == (None, "/wA=")
    assert (second["data"], second.get("data_b64")) == ({"base64": "/wA="}, None)
