"""``herald monitor`` (the view, ``--once --json``, ``--tap``), ``herald topics list/show`` with
live topics nobody declared, ``herald consume`` and ``herald pub --msg-id/--key/--header``: run
as a user runs them, real processes against real servers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import herald
from herald.testing import LocalCluster, LocalSentinel

HERALD = [sys.executable, "-m", "herald.cli"]


def run(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HERALD, *args, "--url", url], capture_output=True, text=True, timeout=timeout
    )


def ok(*args: str, url: str) -> str:
    out = run(*args, url=url)
    assert out.returncode == 0, out.stderr
    return out.stdout


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextmanager
def publishing(url: str, *topics: str, every: float = 0.01) -> Iterator[None]:
    """Publish to each topic every ``every`` seconds in a thread, until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        with herald.Client(url) as hub:
            i = 0
            while not stop.wait(every):
                for t in topics:
                    hub.publish(t, {"i": i})
                i += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_monitor_once_json_shows_undeclared_live_topics_durable_groups_and_rates(
    url: str, topic: str
) -> None:
    durable, recoverable, live = f"{topic}.orders", f"{topic}.prices", f"{topic}.chat"
    with herald.Client(url) as hub:
        hub.declare(durable, durable=True)
        hub.declare(recoverable, history=100)
        for i in range(3):
            hub.publish(durable, i)
        with (
            hub.consume(durable, "billing", "w1", start="all", auto_ack=False) as c,
            hub.subscribe(live),
            hub.subscribe(f"{topic}.never.*"),
        ):
            c.next(5).term("bad")
            held = c.next(5)  # delivered, not acked: pending
            with publishing(url, durable, recoverable):
                doc = json.loads(ok("monitor", f"{topic}.*", "--once", "--json", url=url))
            held.ack()
    assert doc["server"]["cluster"] is False
    assert doc["server"]["patterns"] >= 1
    assert doc["server"]["publish_commands"] > 0
    assert doc["interval"] >= 1.0
    rows = {r["topic"]: r for r in doc["topics"]}
    assert set(rows) == {durable, f"{durable}.dead", recoverable, live}
    assert rows[live] == {
        "topic": live,
        "kind": "live",
        "declared": False,
        "subscribers": 1,
        "published": None,
        "rate": None,  # the server keeps no count of a channel's messages
    }
    orders = rows[durable]
    assert orders["declared"]
    assert orders["kind"] == "durable"
    assert orders["rate"] > 10  # ~100/s published, measured from entries-added
    assert orders["published"] >= orders["length"] >= 3
    assert orders["dead_letters"] == 1
    (group,) = orders["groups"]
    assert group["name"] == "billing"
    assert group["consumers"] == 1
    assert group["pending"] >= 1  # the consumer reads ahead: more are delivered
    assert group["lag"] > 0
    prices = rows[recoverable]
    assert prices["kind"] == "recoverable"
    assert prices["rate"] > 10
    assert prices["published"] > 0


def test_monitor_once_table_and_usage_errors(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(topic):
        out = ok("monitor", topic, "--once", "--interval", "0.2", url=url)
    assert topic in out
    assert "live (undeclared)" in out
    assert "--live-rates" in out  # says why a live topic's rate is unknown
    bad = run("monitor", "--json", url=url)
    assert bad.returncode == 2
    assert "--once" in bad.stderr
    bad = run("monitor", "--tap", "--once", url=url)
    assert bad.returncode == 2


def test_monitor_hides_herald_own_channels_unless_all(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.subscribe(topic).close()
        # a requester's reply inbox: one of Herald's own channels
        try:
            hub.request(topic, "x", timeout=0.1)
        except herald.HeraldError:
            pass
        shown = lines(ok("monitor", "_herald.*", "--once", "--json", "--interval", "0.1", url=url))
        everything = lines(
            ok("monitor", "_herald.*", "--once", "--json", "--all", "--interval", "0.1", url=url)
        )
    assert shown[0]["topics"] == []
    assert any(r["topic"].startswith("_herald.inbox.") for r in everything[0]["topics"])


def test_monitor_live_rates_count_live_messages_through_monitor(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(topic), publishing(url, topic):
        out = run("monitor", topic, "--once", "--json", "--live-rates", url=url)
    assert out.returncode == 0, out.stderr
    assert "MONITOR" in out.stderr  # the cost warning
    (row,) = json.loads(out.stdout)["topics"]
    assert row["rate"] > 10


def test_tap_prints_herald_commands_filtered_by_topic(url: str, topic: str) -> None:
    other = f"{topic}-other"
    proc = subprocess.Popen(
        [*HERALD, "monitor", "--tap", f"{topic}*", "--json", "-n", "3", "-t", "20", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with herald.Client(url) as hub:
            hub.declare(f"{topic}.d", durable=True)
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                hub.publish("unrelated-" + topic[::-1], "no")
                hub.publish(topic, {"n": 1}, headers={"who": "me"})
                hub.publish(f"{topic}.d", "stored")
                time.sleep(0.2)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "MONITOR" in err
    records = lines(out)
    assert len(records) == 3
    for r in records:
        assert any(t.startswith(topic) for t in r["topics"]), r
        assert other not in r["topics"]
    publish = next(r for r in records if r["command"] == "PUBLISH" and r["topics"] == [topic])
    assert publish["messages"] == 1
    assert publish["client"].startswith("127.0.0.1:")


def test_topics_list_and_show_include_undeclared_live_topics(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(topic):
        listing = lines(ok("topics", "list", "--json", url=url))
        table = ok("topics", "list", url=url)
        shown = ok("topics", "show", topic, url=url)
        shown_json = json.loads(ok("topics", "show", topic, "--json", url=url))
    (mine,) = [r for r in listing if r["topic"] == topic]
    assert mine == {
        "topic": topic,
        "declared": False,
        "policy": "live (undeclared)",
        "subscribers": 1,
    }
    assert shown_json == mine
    row = next(line for line in table.splitlines() if line.strip().startswith(topic))
    assert "live (undeclared)" in row
    assert " 1 " in row
    assert "live (undeclared)" in shown
    assert "subscribers   1" in shown
    # no subscribers, not declared: nothing to show
    gone = run("topics", "show", topic, url=url)
    assert gone.returncode == 1
    assert "not declared and has no subscribers" in gone.stderr


def test_consume_prints_and_acks_or_naks(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        for i in range(3):
            hub.publish(topic, {"i": i}, key=f"k{i}")
    out = run("consume", topic, "--group", "g", "--start", "all", "-n", "2", "--json", url=url)
    assert out.returncode == 0, out.stderr
    records = lines(out.stdout)
    assert [r["data"] for r in records] == [{"i": 0}, {"i": 1}]
    assert [r["key"] for r in records] == ["k0", "k1"]
    assert all(r["settled"] == "ack" and r["deliveries"] == 1 for r in records)
    # --nak: the third comes back, delivered again
    nak = run("consume", topic, "-g", "g", "-n", "1", "--nak", "--json", url=url)
    assert nak.returncode == 0, nak.stderr
    assert lines(nak.stdout)[0]["settled"] == "nak"
    again = run("consume", topic, "-g", "g", "-n", "1", "-t", "20", url=url)
    assert again.returncode == 0, again.stderr
    assert '{"i": 2}' in again.stdout
    assert "(delivery 2)" in again.stdout
    assert "ack" in again.stdout
    with herald.Client(url) as hub:
        (group,) = hub.topic_info(topic).groups
    assert group.pending == 0
    assert group.lag == 0
    # nothing left: --timeout before --count is status 1
    late = run("consume", topic, "-g", "g", "-n", "1", "-t", "0.5", url=url)
    assert late.returncode == 1
    live = run("consume", f"{topic}-live", "-g", "g", "-n", "1", url=url)
    assert live.returncode == 1
    assert "not durable" in live.stderr


def test_consume_prints_entries_a_plain_program_wrote(url: str, topic: str) -> None:
    """An entry written by XADD (fields: a dict of bytes) is printed and acked, not a crash."""
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        hub.execute("XADD", f"herald:{{{topic}}}:s", "*", "total", "150", "region", "eu")
        hub.execute("XADD", f"herald:{{{topic}}}:s", "*", "total", "7")
    out = run("consume", topic, "-g", "g", "--start", "all", "-n", "1", "--json", url=url)
    assert out.returncode == 0, out.stderr
    assert lines(out.stdout)[0]["data"] == {"total": "150", "region": "eu"}
    text = run("consume", topic, "-g", "g", "-n", "1", "-t", "20", url=url)
    assert text.returncode == 0, text.stderr
    assert '{"total": "7"}' in text.stdout


def test_pub_msg_id_key_and_headers(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
    first = run("pub", topic, "one", "--msg-id", "m-1", "--key", "k", "-H", "a=b", url=url)
    assert first.returncode == 0, first.stderr
    second = run("pub", topic, "one", "--msg-id", "m-1", url=url)
    assert second.returncode == 0, second.stderr
    assert "duplicate" in second.stderr
    assert "duplicate" not in first.stderr
    with herald.Client(url) as hub:
        (msg,) = hub.history(topic)
    assert msg.id is not None
    assert (msg.key, msg.data, msg.headers) == ("k", "one", {"a": "b"})
    reserved = run("pub", topic, "x", "--header", "Herald-Offset=1", url=url)
    assert reserved.returncode == 2
    assert "--header" in reserved.stderr
    assert "herald-" in reserved.stderr
    many = run("pub", topic, "x", "--msg-id", "m-2", "--count", "2", url=url)
    assert many.returncode == 2
    assert "--msg-id" in many.stderr


def test_monitor_and_tap_on_a_cluster(cluster: LocalCluster, topic: str) -> None:
    url = cluster.url
    with herald.Client(url) as hub:
        with hub.subscribe(topic):
            assert hub.active_topics(f"{topic}*") == {topic: 1}
            doc = json.loads(ok("monitor", f"{topic}*", "--once", "--json", url=url))
            listing = lines(ok("topics", "list", "--json", url=url))
        assert doc["server"]["cluster"] is True
        assert len(doc["server"]["nodes"]) == 3
        (row,) = doc["topics"]
        assert row["topic"] == topic
        assert row["subscribers"] == 1
        assert row["shard_subscribers"] == 1
        assert {
            "topic": topic,
            "declared": False,
            "policy": "live (undeclared)",
            "subscribers": 1,
        } in listing
        # the tap opens one MONITOR per primary: a publish shows up whichever shard it is on
        names = [f"{topic}.{i}" for i in range(6)]
        proc = subprocess.Popen(
            [
                *HERALD,
                "monitor",
                "--tap",
                f"{topic}.*",
                "--json",
                "-n",
                "6",
                "-t",
                "20",
                "--url",
                url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(2)
            for name in names:
                hub.publish(name, "x", confirm=True)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    records = lines(out)
    assert sorted(t for r in records for t in r["topics"]) == names
    assert {r["command"] for r in records} == {"SPUBLISH"}
    assert len({r["node"] for r in records}) > 1


def test_monitor_view_refreshes_until_interrupted(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(topic):
        proc = subprocess.Popen(
            [*HERALD, "monitor", topic, "--interval", "0.2", "--url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Started as a background job (and as CI runs) is: with SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        try:
            time.sleep(3)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
            proc.communicate()  # closes the pipes, also after a timeout
    assert proc.returncode == 0, err
    # Not a terminal: rich shows the last frame only; a rate needs two readings.
    assert re.search(r"PUBLISH commands/s: [\d,.]+", out), out
    assert topic in out
    assert "live (undeclared)" in out


def test_monitor_and_tap_behind_sentinel(sentinel: LocalSentinel, topic: str) -> None:
    url = sentinel.url
    with herald.Client(url) as hub, hub.subscribe(topic):
        doc = json.loads(ok("monitor", topic, "--once", "--json", "--interval", "0.2", url=url))
        proc = subprocess.Popen(
            [*HERALD, "monitor", "--tap", topic, "--json", "-n", "1", "-t", "20", "--url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                hub.publish(topic, "x")
                time.sleep(0.2)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert [r["topic"] for r in doc["topics"]] == [topic]
    assert doc["topics"][0]["subscribers"] == 1
    assert proc.returncode == 0, err
    (record,) = lines(out)
    assert record["command"] == "PUBLISH"
    assert record["topics"] == [topic]


def test_an_acl_user_without_pubsub_lists_declared_topics_and_monitor_says_why(
    own_server: herald.EmbeddedServer,
) -> None:
    with herald.Client(own_server.url) as admin:
        admin.execute("ACL", "SETUSER", "dave", "on", ">pw", "~*", "&*", "+@all", "-pubsub")
        admin.declare("orders", durable=True)
    url = f"redis://dave:pw@127.0.0.1:{own_server.port}"
    listing = run("topics", "list", url=url)
    assert listing.returncode == 0, listing.stderr
    assert "orders" in listing.stdout
    assert "subscribers unknown" in listing.stderr
    refused = run("monitor", "--once", "--interval", "0.1", url=url)
    assert refused.returncode == 1
    assert "NOPERM" in refused.stderr


def test_monitor_and_tap_find_the_server_herald_serve_runs(tmp_path: Path, topic: str) -> None:
    env = {**os.environ, "HERALD_HOME": str(tmp_path)}
    env.pop("HERALD_URL", None)
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - open while serve runs
    serve = subprocess.Popen(
        [*HERALD, "serve", "--no-gateway", "--unix-socket"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "herald.json").exists():
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "herald serve did not start"
            time.sleep(0.05)
        url = json.loads((tmp_path / "herald.json").read_text())["url"]  # has the password
        with herald.Client(url) as hub, hub.subscribe(topic):
            once = subprocess.run(
                [*HERALD, "monitor", topic, "--once", "--json", "--interval", "0.1"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            tap = subprocess.Popen(
                [*HERALD, "monitor", "--tap", topic, "--json", "-n", "1", "-t", "20"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                while tap.poll() is None and time.monotonic() < deadline + 20:
                    hub.publish(topic, "x")
                    time.sleep(0.2)
                out, err = tap.communicate(timeout=20)
            finally:
                tap.kill()
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(15)
        log.close()
    assert once.returncode == 0, once.stderr
    assert json.loads(once.stdout)["topics"][0]["subscribers"] == 1
    assert tap.returncode == 0, err
    assert lines(out)[0]["topics"] == [topic]
