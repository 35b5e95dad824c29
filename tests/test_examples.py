"""The examples under ``examples/`` run as users run them (one command, a real process) against
the test Valkey, and their results are checked."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import herald
from herald._server import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run ``examples/<name>/main.py`` and return the JSON summary it prints last."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


def test_task_dispatch_survives_a_killed_worker(url: str) -> None:
    summary = run_example("task_dispatch", "--url", url, "--parts", "12", "--workers", "2")
    assert summary["correct"]
    assert summary["results"] == 12
    assert summary["total"] == summary["expected"]
    assert summary["killed"] == "worker-0"
    # The part the killed worker held was never acked: another worker got it again.
    assert summary["redelivered_parts"]
    assert summary["by_worker"].get("worker-1", 0) >= 1


def test_routing_by_content(url: str) -> None:
    summary = run_example("routing", "--url", url, "--ticks", "500")
    assert summary["correct"]
    assert summary["published"] == 500
    # every 50th tick has no sector; half the feed came from a plain (envelope-less) publisher
    assert summary["counters"] == {"by sector": 490, "default": 10, "unrouted": 0}
    assert summary["received_by_topic"]["prices.unrouted"] == 10
    assert summary["tech_desk"] == summary["received_by_topic"]["prices.tech"]


def test_scoreboard_counts_the_feed_and_serves_the_top_10(url: str) -> None:
    feed = [
        json.loads(line)
        for line in (EXAMPLES / "scoreboard" / "feed.jsonl").read_text().splitlines()
    ]
    want = {
        "usernames": Counter(p["author"] for p in feed),
        "hashtags": Counter(t for p in feed for t in p["hashtags"]),
    }
    port = free_port()
    board = f"test-scoreboard-{port}"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "scoreboard" / "main.py"), "--url", url,
         "--port", str(port), "--board", board],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        printed = json.loads(proc.stdout.readline())
        assert "serving" in proc.stdout.readline()
        assert printed["posts"] == len(feed)
        for name in ("usernames", "hashtags"):
            top = fetch(f"http://127.0.0.1:{port}/top/{name}")[name]
            assert top == printed[name]
            assert len(top) == 10
            # Each count is the feed's, and they are the 10 highest.
            assert all(count == want[name][member] for member, count in top)
            assert [c for _, c in top] == sorted(want[name].values(), reverse=True)[:10]
        assert (
            fetch(f"http://127.0.0.1:{port}/top/hashtags?n=3")["hashtags"]
            == printed["hashtags"][:3]
        )
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def fetch(address: str) -> Any:
    """GET ``address`` (retried while the example starts) and decode its JSON."""
    return json.loads(fetch_text(address))


def test_cache_invalidation_stays_correct_across_reconnects(url: str) -> None:
    summary = run_example("cache_invalidation", "--url", url, "--rounds", "2")
    assert summary["correct"]
    assert summary["stale_reads"] == 0
    assert summary["connections_cut"] >= 4  # two services, two rounds
    assert summary["received"] == {"shop": 20, "search": 20}
    assert summary["history_lost"] == 0
    assert summary["recovered_from_history"] >= 1  # published while the connections were down


def test_chat_over_the_gateway_websocket(url: str) -> None:
    from websockets.asyncio import client as websockets

    port = free_port()
    room = f"t{port}"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "chat" / "main.py"), "--url", url, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "chat:" in proc.stdout.readline()
        # The printed commands name the chat's server: a shell joins the same conversation.
        sub_line, pub_line = proc.stdout.readline(), proc.stdout.readline()
        assert sub_line.split("herald sub", 1)[1].split() == ["'chat.*'", "--url", url]
        with herald.Client(url) as hub, hub.subscribe("chat.lobby") as sub:
            pub = shlex.split(pub_line.split("herald pub", 1)[1])
            herald_cli = Path(sys.executable).with_name("herald")
            subprocess.run([str(herald_cli), "pub", *pub], check=True, timeout=30)
            assert sub.next(timeout=5).data == {"user": "cli", "text": "hi"}
        page = fetch_text(f"http://127.0.0.1:{port}/chat?room={room}")
        assert "new WebSocket" in page
        asyncio.run(chat(websockets, f"ws://127.0.0.1:{port}/ws", f"chat.{room}"))
    finally:
        stop(proc)


async def chat(websockets: Any, ws_url: str, topic: str) -> None:
    """Alice and Bob talk; Carol joins later and reads the room's history."""
    async with websockets.connect(ws_url) as alice, websockets.connect(ws_url) as bob:
        for ws in (alice, bob):
            await ws.send(json.dumps({"op": "subscribe", "topic": topic, "last": 20, "id": 1}))
            assert (await next_frame(ws))["type"] == "subscribed"
        lines = ["hi", "hello bob", "bye"]
        for text in lines:
            await bob.send(
                json.dumps({"op": "publish", "topic": topic, "data": {"user": "bob", "text": text}})
            )
        got = [await next_message(alice) for _ in lines]
        assert [m["data"]["text"] for m in got] == lines
        assert [m["offset"] for m in got] == [1, 2, 3]
    # A tab that joins later gets the room's last messages from its history.
    async with websockets.connect(ws_url) as carol:
        await carol.send(json.dumps({"op": "subscribe", "topic": topic, "last": 20, "id": 1}))
        history = [await next_message(carol) for _ in lines]
        assert [m["data"]["text"] for m in history] == lines


async def next_frame(ws: Any) -> dict[str, Any]:
    frames = json.loads(await asyncio.wait_for(ws.recv(), 10))
    frames = frames if isinstance(frames, list) else [frames]
    first: dict[str, Any] = frames[0]
    _backlog.setdefault(id(ws), []).extend(frames[1:])
    return first


_backlog: dict[int, list[dict[str, Any]]] = {}


async def next_message(ws: Any) -> dict[str, Any]:
    """The next frame of type ``message`` (frames may come several to a WebSocket frame)."""
    while True:
        backlog = _backlog.setdefault(id(ws), [])
        frame = backlog.pop(0) if backlog else await next_frame(ws)
        if frame["type"] == "message":
            return frame


def fetch_text(address: str) -> str:
    """GET ``address``, retried for 10 s while the example starts listening."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(address, timeout=5) as response:
                return bytes(response.read()).decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
