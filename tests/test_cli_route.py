"""``herald route`` and ``herald pub --type``, run as a user runs them: real processes, real
servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import herald

HERALD = [sys.executable, "-m", "herald.cli"]


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HERALD, *args], capture_output=True, text=True, timeout=timeout)


def _wait_group(hub: herald.Client, topic: str, group: str) -> None:
    deadline = time.monotonic() + 15
    while not any(g.name == group for g in hub.topic_info(topic).groups):
        assert time.monotonic() < deadline, "the router never joined its group"
        time.sleep(0.05)


def test_pub_type_sets_the_message_type(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        out = _run("pub", topic, '{"id": 1}', "--json", "--type", "OrderCreated", "--url", url)
        assert out.returncode == 0, out.stderr
        (msg,) = hub.history(topic)
    assert msg.type == "OrderCreated"
    assert msg.data == {"id": 1}
    out = _run("pub", topic, "x", "--plain", "--type", "T", "--url", url)
    assert out.returncode == 2
    assert "no type" in out.stderr
    out = _run("pub", topic, "x", "--type", "", "--url", url)
    assert out.returncode == 1
    assert "invalid message type" in out.stderr


def test_route_rules_default_and_counters(url: str, topic: str) -> None:
    src = f"{topic}.in"
    with herald.Client(url) as hub:
        for t in (src, f"{topic}.big", f"{topic}.eu", f"{topic}.rest"):
            hub.declare(t, durable=True)
        for data in (
            {"total": 500, "region": "us"},
            {"total": 5, "region": "eu"},
            {"total": 5, "region": "us"},
        ):
            hub.publish(src, data)
        out = _run(
            "route", src, "--group", "router", "--start", "all",
            "-r", f"total > 100 => {topic}.big",
            "-r", f"region == eu => {topic}.{{region}}",
            "--default", f"{topic}.rest",
            "--count", "3", "--json", "--url", url,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout.splitlines()[-1])
        assert record["counters"] == {
            f"total > 100 => {topic}.big": 1,
            f"region == eu => {topic}.{{region}}": 1,
            "default": 1,
            "unrouted": 0,
        }
        assert [m.data["total"] for m in hub.history(f"{topic}.big")] == [500]
        assert [m.data["region"] for m in hub.history(f"{topic}.eu")] == ["eu"]
        assert len(hub.history(f"{topic}.rest")) == 1


def test_route_rules_file(url: str, topic: str, tmp_path: Path) -> None:
    rules = tmp_path / "routes.toml"
    rules.write_text(
        f'source = "{topic}"\ngroup = "router"\nstart = "all"\ndefault = "{topic}.rest"\n'
        f'[[rule]]\nname = "big"\nwhen = "total > 100"\nto = ["{topic}.big", "{topic}.audit"]\n'
        f'[[rule]]\nname = "nz"\nwhen = ["country == NZ", "total > 1"]\nto = "{topic}.nz"\n'
    )
    with herald.Client(url) as hub:
        for t in ("", ".big", ".audit", ".nz", ".rest"):
            hub.declare(f"{topic}{t}", durable=True)
        for data in ({"total": 500}, {"total": 5, "country": "NZ"}, {"total": 0}):
            hub.publish(topic, data)
        out = _run("route", "--rules", str(rules), "--count", "3", "--json", "--url", url)
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout)
        assert record["counters"] == {"big": 1, "nz": 1, "default": 1, "unrouted": 0}
        assert record["published"] == 4
        assert len(hub.history(f"{topic}.audit")) == 1


def test_route_usage_errors(url: str, topic: str, tmp_path: Path) -> None:
    out = _run("route", topic, "-r", "total > 100", "--url", url)
    assert out.returncode == 2
    assert "CONDITION => TARGET" in out.stderr
    out = _run("route", topic, "-r", "total >> 3 => x", "--url", url)
    assert out.returncode == 2
    assert "not FIELD OP VALUE" in out.stderr
    out = _run("route", topic, "--url", url)
    assert out.returncode == 2
    assert "at least one --rule" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('sauce = "x"\n')
    out = _run("route", topic, "--rules", str(bad), "--url", url)
    assert out.returncode == 2
    assert "unknown keys sauce" in out.stderr
    out = _run("route", topic, "--group", "g", "--default", "x", "--url", url)
    assert out.returncode == 1
    assert "not durable" in out.stderr


def test_route_killed_and_restarted_loses_nothing(url: str, topic: str) -> None:
    """kill -9 of the router midway: the restarted one routes everything, each message once
    (the routed copies carry a msg_id: a message routed but not acked is stored once)."""
    src, even, odd = f"{topic}.in", f"{topic}.even", f"{topic}.odd"
    n = 400
    args = [
        *HERALD, "route", src, "--group", "router", "--consumer", "r1",
        "-r", f"parity == 0 => {even}", "--default", odd, "--json", "--url", url,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with herald.Client(url) as hub:
        for t in (src, even, odd):
            hub.declare(t, durable=True)
        first = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        try:
            _wait_group(hub, src, "router")
            for i in range(n):
                hub.publish(src, {"i": i, "parity": i % 2}, confirm=False)
                if i == n // 4:
                    deadline = time.monotonic() + 15
                    while not hub.history(even, limit=1) + hub.history(odd, limit=1):
                        assert time.monotonic() < deadline
                        time.sleep(0.01)
                    first.send_signal(signal.SIGKILL)
            hub.flush()
        finally:
            first.kill()
            first.wait()
        out = _run(*args[3:], "--timeout", "3")
        assert out.returncode == 0, out.stderr
        routed = hub.history(even, limit=1000) + hub.history(odd, limit=1000)
    got = Counter(m.data["i"] for m in routed)
    assert sorted(got) == list(range(n))  # none lost
    assert set(got.values()) == {1}  # none twice
