"""The recoverable-topic benchmark: a topic with history next to a live topic, in one run.

The same publisher and subscriber workers as the live benchmark (``_live_herald``) run against
a topic declared with ``history`` and against an undeclared (live) one, taking turns, on one
embedded Valkey: end-to-end throughput, and latency at a fixed rate. Then the recovery time:
a subscriber whose connection is cut while N messages are published, timed from the cut to
the last missed message delivered.

Example::

    from herald_bench.recoverable import format_table, run_recoverable

    print(format_table(run_recoverable(runs=1, duration=1.0)))
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

from ._harness import median, run_pair, server_pid, worker_params
from .live import PINNED, REGISTRY, SERVER_ARGS, _environment

HISTORY = 100_000


def run_recoverable(
    *,
    runs: int = 3,
    duration: float = 3.0,
    payload_size: int = 100,
    rate: int = 20_000,
    missed: int = 10_000,
) -> dict[str, Any]:
    """Run the benchmark and return its result (JSON-able)."""
    import herald
    from herald._server import EmbeddedServer

    started = time.time()
    server = EmbeddedServer(persist=False, args=SERVER_ARGS)
    server.start()
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        pid = server_pid(server)
        env = _environment(server.url)
        base = worker_params(server, duration=duration, payload_size=payload_size)
        with herald.Client(server.url) as hub:

            def channel(kind: str) -> str:
                name = f"bench.recoverable.{kind}.{uuid.uuid4().hex[:8]}"
                if kind.startswith("history"):
                    hub.declare(name, history=HISTORY)
                return name

            plan = [
                ("live", 0),
                ("history", 0),
                (f"live@{rate}", rate),
                (f"history@{rate}", rate),
            ]
            for _ in range(runs):
                for kind, target in plan:
                    pub, sub, load = run_pair(
                        REGISTRY,
                        "herald-async",
                        "herald-handler",
                        {**base, "rate": target, "channel": channel(kind)},
                        duration * 4 + 30,
                        pid,
                    )
                    rows.setdefault(kind, []).append(
                        {"publisher": pub, "subscriber": sub, "machine": load}
                    )
        recovery = [asyncio.run(_recovery_time(server.port, missed)) for _ in range(runs)]
    finally:
        server.cleanup()
    table = {kind: _summary(samples) for kind, samples in rows.items()}
    live, hist = table["live"].get("delivered_per_s"), table["history"].get("delivered_per_s")
    env["loadavg_at_end"] = list(os.getloadavg())
    return {
        "benchmark": "recoverable",
        "parameters": {
            "runs": runs,
            "duration": duration,
            "payload_size": payload_size,
            "rate": rate,
            "missed": missed,
            "history": HISTORY,
        },
        "environment": env,
        "pinned": PINNED,
        "wall_seconds": round(time.time() - started, 1),
        "rows": table,
        "history_x_live": hist / live if hist and live else None,
        "recovery_seconds": median(recovery),
        "recovery_runs": recovery,
    }


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    subs = [s["subscriber"] for s in samples]
    out: dict[str, Any] = {
        "published_per_s": median([s["publisher"].get("rate") for s in samples]),
        "delivered_per_s": median([s.get("rate") for s in subs]),
        "other_cores": median([s["machine"].get("other_cores") for s in samples]),
    }
    for key in ("p50", "p99", "max"):
        values = [s["latency_us"][key] for s in subs if "latency_us" in s]
        if values:
            out[f"{key}_us"] = median(values)
    errors = [s["error"] for s in [*subs, *(x["publisher"] for x in samples)] if "error" in s]
    if errors:
        out["errors"] = errors
    return out


async def _recovery_time(port: int, missed: int) -> float:
    """Seconds from a subscriber's resubscribe to its last missed message, ``missed`` having
    been published while its connection was held down (a TCP proxy stops forwarding)."""
    import herald
    from herald.faults.proxy import Proxy

    url = f"redis://127.0.0.1:{port}"
    topic = f"bench.recover.{uuid.uuid4().hex[:8]}"
    with Proxy(port) as proxy:
        async with (
            herald.AsyncClient(url) as pub,
            herald.AsyncClient(proxy.url, probe_interval=0.2) as hub,
        ):
            await pub.declare(topic, history=HISTORY)
            await pub.publish(topic, 0, confirm=True)
            done = asyncio.Event()
            resumed: list[float] = []

            def handler(msg: herald.Message) -> None:
                if msg.offset == missed + 1:
                    done.set()

            def on_gap(gap: herald.Gap) -> None:
                resumed.append(time.perf_counter())

            sub = await hub.subscribe(topic, handler=handler, on_gap=on_gap, max_pending=missed * 2)
            proxy.down()
            while hub.stats.connected:  # noqa: ASYNC110 - the probe notices the cut
                await asyncio.sleep(0.01)
            await pub.publish_many(topic, list(range(1, missed + 1)))
            await pub.flush()
            proxy.up()
            await asyncio.wait_for(done.wait(), 60)
            took = time.perf_counter() - resumed[0]
            assert sub.stats.recovered >= missed, sub.stats
            await sub.close()
            return took


def format_table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        "| topic | published/s | delivered/s | p50 | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, r in rows.items():

        def us(key: str, r: dict[str, Any] = r) -> str:
            v = r.get(key)
            return "" if v is None else f"{v / 1000:.2f} ms"

        lines.append(
            f"| {kind} | {r.get('published_per_s') or 0:,.0f} | "
            f"{r.get('delivered_per_s') or 0:,.0f} | {us('p50_us')} | {us('p99_us')} |"
        )
    ratio = result.get("history_x_live")
    lines.append("")
    lines.append(f"history/live delivered: {ratio:.2f}x" if ratio else "history/live: n/a")
    lines.append(
        f"recovery of {result['parameters']['missed']:,} missed messages: "
        f"{result['recovery_seconds']:.3f} s (runs: "
        + ", ".join(f"{x:.3f}" for x in result["recovery_runs"])
        + ")"
    )
    return "\n".join(lines)
