"""Topologies under durable load: 7. a Sentinel failover, the primary killed -9 or paused
(SIGSTOP) past ``down-after-milliseconds``; 8. a cluster shard's primary killed -9, and the
topic's slot migrated; publishing with and without ``replicas=1`` (``WAIT``).

Redis replication is asynchronous: without ``WAIT`` a failover can lose writes the old primary
acknowledged. The scenario measures that loss rather than hiding it; with ``replicas=1`` an
acknowledged publish is on a replica before the ack, and the promise is lost == 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from herald import AsyncClient

from ._harness import Publisher, Scale, drain, recorded, summary
from .checker import Checker


async def _durable_load_through(
    url: str,
    checker: Checker,
    replicas: int,
    seconds: float,
    fault: str,
    inject: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    """Publish to a durable topic on ``url`` and consume it, run ``inject`` (the fault) after a
    second of load, keep publishing ``seconds`` more, drain; the run's figures."""
    hubs = [AsyncClient(url, probe_interval=0.25, publish_timeout=5.0) for _ in range(2)]
    try:
        await hubs[0].declare("orders", durable=True)
        consumer = await recorded(hubs[1], "orders", "c0", checker, ack_wait=5.0)
        pub = Publisher(hubs[0], "orders", checker, "p0", window=8, replicas=replicas)
        stop = asyncio.Event()
        load = asyncio.create_task(pub.run(stop=stop))
        await asyncio.sleep(1.0)
        with checker.fault(fault):
            await inject()
        await asyncio.sleep(seconds)
        stop.set()
        await load
        drained = await drain(checker, ["g"], 30)
        await consumer.close()
    finally:
        for hub in hubs:
            await hub.close()
    r = checker.report()
    return {
        "replicas": replicas,
        "ok": r["ops"]["ok"],
        "unknown": r["ops"]["unknown"],
        "failed": r["ops"]["failed"],
        "lost": r["lost"],
        "lost_split": r["lost_split"],
        "unexpected": r["unexpected"],
        "duplicates": r["duplicates"],
        "time_to_recover_s": r["time_to_recover_s"],
        "p99_ms": r["latency_ms"]["p99"],
        "drained": drained,
        "publish_errors": dict(pub.errors),
    }


class _Topology(Protocol):
    def start(self, timeout: float = ...) -> object: ...

    def close(self) -> None: ...


@asynccontextmanager
async def _running(topology: _Topology) -> AsyncIterator[None]:
    """A LocalSentinel or LocalCluster started, and closed after (from a thread: they block)."""
    await asyncio.to_thread(topology.start)
    try:
        yield
    finally:
        await asyncio.to_thread(topology.close)


async def _one_failover(how: str, replicas: int, seconds: float) -> dict[str, Any]:
    """One Sentinel run: the primary killed -9 (``kill``) or paused past
    ``down-after-milliseconds`` and resumed after the failover (``pause``)."""
    from herald.testing import LocalSentinel

    checker = Checker(f"sentinel-{how}-replicas={replicas}")
    group = LocalSentinel(replicas=2, sentinels=3, down_after=1000, failover_timeout=3000)

    async def inject() -> None:
        if how == "kill":
            old = await asyncio.to_thread(group.kill_primary)
            await asyncio.to_thread(group.wait_failover, old, 30)
        else:
            old = await asyncio.to_thread(group.pause_primary)
            await asyncio.to_thread(group.wait_failover, old, 30)
            group.resume(old)  # the old primary wakes up and is demoted

    async with _running(group):
        run = await _durable_load_through(
            group.url, checker, replicas, seconds, f"primary {how}", inject
        )
    return {"how": how, **run}


async def sentinel_failover(scale: Scale) -> dict[str, Any]:
    modes = scale.pick(
        [("kill", 0), ("kill", 1)], [("kill", 0), ("kill", 1), ("pause", 0), ("pause", 1)]
    )
    runs = [await _one_failover(how, n, scale.pick(2.0, 5.0)) for how, n in modes]
    return _report("sentinel-failover", runs, "how", lambda r: bool(r["replicas"]))


async def _cluster_run(fault: str, replicas: int, seconds: float) -> dict[str, Any]:
    """One cluster run: ``kill`` -9 the primary of the topic's slot, or ``migrate`` the slot
    (stream and all) to another primary, under durable load."""
    from herald.testing import LocalCluster

    checker = Checker(f"cluster-{fault}-replicas={replicas}")
    cluster = LocalCluster(primaries=3, replicas_per_primary=1)
    async with _running(cluster):
        slot = cluster.keyslot("{orders}")

        async def inject() -> None:
            old = cluster.primary_for(slot)
            if fault == "kill":
                await asyncio.to_thread(cluster.kill, old)
                await asyncio.to_thread(cluster.wait_failover, old, 30)
            else:
                target = next(n for n in cluster.primaries() if n is not old)
                await asyncio.to_thread(cluster.migrate_slot, slot, target)

        run = await _durable_load_through(
            cluster.url, checker, replicas, seconds, f"slot {slot}: {fault}", inject
        )
    return {"fault": fault, **run}


async def cluster_faults(scale: Scale) -> dict[str, Any]:
    """8. A cluster shard's primary killed -9 (with and without ``replicas=1``), and the topic's
    slot migrated to another primary, under durable load."""
    modes = scale.pick([("kill", 1), ("migrate", 0)], [("kill", 0), ("kill", 1), ("migrate", 0)])
    runs = [await _cluster_run(f, n, scale.pick(2.0, 5.0)) for f, n in modes]
    # A migration kills no node: it must lose nothing, even without replicas=1.
    return _report(
        "cluster-faults", runs, "fault", lambda r: bool(r["replicas"]) or r["fault"] == "migrate"
    )


def _report(
    scenario: str, runs: list[dict[str, Any]], fault: str, safe: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Every run (named by its ``fault`` field and replicas) delivers nothing unexpected; the
    ``safe`` runs (waiting for replicas) lose nothing; what the others lose is measured."""

    def name(r: dict[str, Any]) -> str:
        return f"{r[fault]}, replicas={r['replicas']}"

    checks = {f"{name(r)}: unexpected == 0": r["unexpected"] == 0 for r in runs}
    for r in runs:
        if safe(r):
            checks[f"{name(r)}: lost == 0"] = r["lost"] == 0
    report = {
        "scenario": scenario,
        "runs": runs,
        "lost": sum(r["lost"] for r in runs if safe(r)),
        "lost_without_wait": sum(r["lost"] for r in runs if not safe(r)),
    }
    return summary(report, checks)
