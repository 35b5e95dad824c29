"""The comparison benchmark's bookkeeping: ratios, goals, peers that cannot run, rendering.

The benchmark itself runs for minutes and measures the machine; these tests feed its
summarising code with runs of known figures and check what it concludes and prints.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from herald_bench import compare
from herald_bench._compare_rows import _durable_rows, _live_rows
from herald_bench._durable_workers import IDLE, _until_idle


def run(delivered: float, published: float) -> dict[str, Any]:
    """One run of a live row as the harness returns it: (subscriber, publisher) samples."""
    return {
        "workers": [{"rate": delivered}, {"rate": published}],
        "machine": {"other_cores": 0.1},
    }


def live_result(unavailable: dict[str, str]) -> dict[str, Any]:
    rows = {r.name: r for r in _live_rows()}
    figures = {
        "herald": [(300e3, 310e3), (280e3, 300e3), (320e3, 330e3)],
        "redis-py-sync-pipe": [(400e3, 410e3)],
        "nats": [(100e3, 200e3)],
        "broadcaster": [(0.0, 9e3)],
    }
    live = [
        compare._summarise(rows[name], [run(d, p) for d, p in runs], None)
        for name, runs in figures.items()
    ]
    live.append(
        compare._summarise(rows["rabbitmq"], [], unavailable.get("rabbitmq", "not installed"))
    )
    failed = {"workers": [{"error": "Traceback ...\nTimeoutError: no message"}, {}], "machine": {}}
    live.append(compare._summarise(rows["faststream"], [failed], None))
    results = {"live": live}
    compare._add_ratios(results)
    return {
        "parameters": {"runs": 3, "duration": 2.0, "payload_size": 100},
        "environment": {
            "server": "valkey",
            "server_version": "9",
            "python": "3.11",
            "cpu_count": 2,
            "packages": {},
            "servers": {},
        },
        "pinned": "nothing",
        "wall_seconds": 1.0,
        "unavailable": unavailable,
        "workloads": results,
        "goals": compare._goals(results),
    }


def test_medians_ratios_and_goals() -> None:
    result = live_result({})
    rows = {r["row"]: r for r in result["workloads"]["live"]}
    assert rows["herald"]["delivered"] == 300e3  # the median of three runs
    assert rows["nats"]["herald_x"] == pytest.approx(3.0)
    assert rows["redis-py-sync-pipe"]["herald_x"] == pytest.approx(0.75)
    assert rows["broadcaster"]["note"] == "the subscriber received nothing"
    assert rows["faststream"]["errors"] == ["TimeoutError: no message"]
    goals = {g["check"]: g for g in result["goals"]}
    first = goals["live: Herald first among Redis-based clients"]
    assert not first["met"]
    assert first["best_other"] == "redis-py-sync-pipe"
    assert goals["live end to end: Herald ahead of nats-py"]["met"]


def test_the_table_says_why_a_peer_did_not_run() -> None:
    reason = "no RabbitMQ at amqp://127.0.0.1:1/ (ConnectionError)"
    table = compare.format_table(live_result({"rabbitmq": reason}))
    assert f"**aio-pika not run: {reason}**" in table
    assert "**not met** (Herald 300.0k, redis-py-sync-pipe 400.0k)" in table
    assert "| nats | 200.0k | 100.0k | 3.0x |" in table
    assert "| redis-py-sync-pipe | 410.0k | 400.0k | 0.75x |" in table
    assert "failed: TimeoutError: no message" in table


def test_unreachable_servers_are_reported() -> None:
    pytest.importorskip("nats")
    pytest.importorskip("aio_pika")
    from herald_bench._compare_setup import _unavailable

    found = _unavailable("nats://127.0.0.1:1", "amqp://guest:guest@127.0.0.1:1/")
    assert found["nats"].startswith("no nats-server at nats://127.0.0.1:1")
    assert found["rabbitmq"].startswith("no RabbitMQ at amqp://guest:guest@127.0.0.1:1/")
    assert "herald" not in found


def test_charts_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = compare.write_charts(live_result({}), str(tmp_path))
    assert paths == [str(tmp_path / "compare-live.png")]
    assert (tmp_path / "compare-live.png").read_bytes().startswith(b"\x89PNG")


def test_a_latency_row_that_fell_behind_its_rate_is_not_compared() -> None:
    # broadcaster publishes one message per round trip: asked for 20k/s it manages ~7k/s, and
    # its latency at that lower rate must not decide the goal.
    figures = {  # row -> (achieved rate, p50, p99)
        "herald": (20e3, 250.0, 540.0),
        "broadcaster-fixed": (7.4e3, 140.0, 410.0),
        "redis-py-asyncio": (20e3, 1000.0, 2400.0),
    }

    class Ctx:
        def run(self, row: Any, params: dict[str, Any]) -> dict[str, Any]:
            achieved, p50, p99 = figures[row.name]
            sub = {"latency_us": {"p50": p50, "p99": p99}}
            return {"workers": [sub, {"rate": achieved}], "machine": {"other_cores": 0.0}}

    unavailable = dict.fromkeys(("faststream", "nats", "rabbitmq", "raw"), "not in this test")
    results = compare._latency(Ctx(), 1, (20_000,), [], unavailable, lambda _: None)  # type: ignore[arg-type]
    rows = {r["row"]: r for r in results["latency-20k"]}
    assert rows["broadcaster-fixed"]["note"] == "fell behind: 7.4k/s of 20k/s"
    assert "note" not in rows["herald"]
    (goal,) = compare._goals(results)
    assert goal["met"]
    assert goal["best_other"] == "redis-py-asyncio"
    figures["redis-py-asyncio"] = (20e3, 200.0, 500.0)  # a peer at the full rate still counts
    results = compare._latency(Ctx(), 1, (20_000,), [], unavailable, lambda _: None)  # type: ignore[arg-type]
    (goal,) = compare._goals(results)
    assert not goal["met"]


def test_a_consumer_row_that_drained_its_backlog_says_so() -> None:
    rows = {r.name: r for r in _durable_rows() if r.workload == "durable-consume"}

    def consumed(counts: list[int], prefilled: int) -> dict[str, Any]:
        workers = [{"received": n, "first": 1.0, "last": 2.5, "rate": None} for n in counts]
        return {"workers": workers, "machine": {}, "after": {"prefilled": prefilled}}

    full = compare._summarise(rows["herald"], [consumed([250, 250], 500)] * 2, None)
    assert full["note"] == "drained the whole backlog before the end in 2 of 2 runs"
    part = compare._summarise(rows["redis-py"], [consumed([200, 250], 500)], None)
    assert "note" not in part
    assert part["value"] == pytest.approx(300.0)  # 450 messages over 1.5 s


async def test_a_drained_consumer_stops_after_idle_not_after_the_first_wait() -> None:
    # The first message may come after the idle check started: a drained backlog still ends
    # IDLE seconds after the last message (not at FIRST_WAIT, 30 s).
    count = 0

    async def trickle() -> None:
        nonlocal count
        await asyncio.sleep(0.1)
        count = 5

    task = asyncio.get_running_loop().create_task(trickle())
    start = time.monotonic()
    await _until_idle(lambda: count)
    await task
    assert count == 5
    assert time.monotonic() - start < 0.1 + 3 * IDLE


def test_a_close_ratio_keeps_two_decimals() -> None:
    from herald_bench._compare_render import _x

    assert [_x(v) for v in (1.048, 0.953, 2.04, 123.4, None)] == [
        "1.05x",
        "0.95x",
        "2.0x",
        "123x",
        "-",
    ]
