"""The durable-topic benchmark: Herald's durable publish and consumers next to redis-py and
FastStream, in one run on one server.

Publish rows run one publisher process for ``duration`` seconds against an empty stream (Herald:
a topic declared durable, so each message is an XADD and a PUBLISH). Consume rows read a stream
the parent fills before the barrier with more entries than they drain in ``duration`` (pipelined
raw XADDs of each client's own message format), in a consumer group created at the stream's
start, with one or several consumer processes; each message is acked. Rows take turns (run 1 of
every row, then run 2, ...); the table shows medians. Nothing is pinned to a CPU.

Example::

    from herald_bench.durable import format_table, run_durable

    print(format_table(run_durable(runs=1, duration=1.0)))
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from typing import Any, cast

import hiredis

from herald._core.resp import command
from herald._core.streams import stream_key

from ._harness import median, run_workers, server_pid
from .live import PINNED, _cores, _environment, _num

REGISTRY = "herald_bench._durable_workers:WORKERS"
GROUP = "bench"
PREFILL_CHUNK = 1000


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    name: str
    kind: str  # "publish" or "consume"
    worker: str
    client: str  # "herald", "redis-py" or "faststream": the stream's format
    label: str
    processes: int = 1
    # consume rows: entries per second of duration to put in the stream first (more than the
    # row drains; one that drains early is still measured correctly, over fewer seconds)
    prefill_rate: int = 0
    # the rows its rate is compared with (by name)
    versus: tuple[str, ...] = ()
    # CONFIG SET for the row (the server is reset after it): AOF and its fsync policy
    server_config: tuple[tuple[str, str], ...] = ()


ROWS = (
    Row(
        "herald-publish-confirmed",
        "publish",
        "herald-confirmed",
        "herald",
        "Herald: await publish() one at a time, each waiting for the server (durable default)",
        versus=("redis-xadd", "redis-xadd-pipe"),
    ),
    Row(
        "herald-publish-confirmed-64",
        "publish",
        "herald-concurrent",
        "herald",
        "Herald: 64 tasks, each awaiting publish() (confirmed) in a loop",
        versus=("redis-xadd", "redis-xadd-pipe"),
    ),
    Row(
        "herald-publish-64-aof",
        "publish",
        "herald-concurrent",
        "herald",
        "Herald: 64 tasks, confirmed publish(), AOF appendfsync everysec",
        versus=("herald-publish-confirmed-64",),
        server_config=(("appendonly", "yes"), ("appendfsync", "everysec")),
    ),
    Row(
        "herald-publish-64-fsync",
        "publish",
        "herald-fsync",
        "herald",
        "Herald: 64 tasks, publish(fsync=True) (on disk when acknowledged), AOF everysec",
        versus=("herald-publish-64-aof",),
        server_config=(("appendonly", "yes"), ("appendfsync", "everysec")),
    ),
    Row(
        "herald-publish-64-always",
        "publish",
        "herald-concurrent",
        "herald",
        "Herald: 64 tasks, confirmed publish(), AOF appendfsync always",
        versus=("herald-publish-64-aof",),
        server_config=(("appendonly", "yes"), ("appendfsync", "always")),
    ),
    Row(
        "herald-publish-ff",
        "publish",
        "herald-ff",
        "herald",
        "Herald: await publish(confirm=False) one at a time (not waiting for the server)",
        versus=("redis-xadd", "redis-xadd-pipe"),
    ),
    Row(
        "herald-publish-many",
        "publish",
        "herald-many",
        "herald",
        "Herald: await publish_many() of 1000 messages",
        versus=("redis-xadd", "redis-xadd-pipe"),
    ),
    Row(
        "redis-xadd",
        "publish",
        "redispy-xadd",
        "redis-py",
        "redis-py sync: xadd() one at a time",
    ),
    Row(
        "redis-xadd-pipe",
        "publish",
        "redispy-xadd-pipe",
        "redis-py",
        "redis-py sync: pipeline of 1000 xadd()",
    ),
    Row(
        "herald-consume",
        "consume",
        "herald-handler",
        "herald",
        "Herald: 1 consumer process, consume(handler=...), auto-ack (defaults)",
        prefill_rate=450_000,
        versus=("redis-consume", "faststream-consume"),
    ),
    Row(
        "herald-consume-iter",
        "consume",
        "herald-iter",
        "herald",
        "Herald: 1 consumer process, async for msg in consume(...), auto-ack (defaults)",
        prefill_rate=450_000,
        versus=("redis-consume", "faststream-consume"),
    ),
    Row(
        "herald-consume-4",
        "consume",
        "herald-handler",
        "herald",
        "Herald: 4 consumer processes of one group, handler, auto-ack",
        processes=4,
        prefill_rate=700_000,
        versus=("redis-consume-4", "faststream-consume"),
    ),
    Row(
        "redis-consume",
        "consume",
        "redispy-consumer",
        "redis-py",
        "redis-py sync: 1 consumer process, XREADGROUP COUNT 100 + one XACK per read",
        prefill_rate=450_000,
    ),
    Row(
        "redis-consume-4",
        "consume",
        "redispy-consumer",
        "redis-py",
        "redis-py sync: 4 consumer processes, XREADGROUP COUNT 100 + XACK",
        processes=4,
        prefill_rate=700_000,
    ),
    Row(
        "faststream-consume",
        "consume",
        "faststream-consumer",
        "faststream",
        "FastStream: 1 consumer process, StreamSub(group=..., consumer=...) with its defaults "
        "(ack after the handler), logging at warnings",
        prefill_rate=10_000,
    ),
)


def run_durable(
    *,
    runs: int = 3,
    duration: float = 3.0,
    payload_size: int = 100,
    only: list[str] | None = None,
    max_other_load: float | None = None,
) -> dict[str, Any]:
    """Run the durable benchmark and return its result (JSON-able).

    Args:
        runs: runs per row (rows take turns); the table shows medians.
        duration: seconds each publisher publishes, and at most each consumer consumes, per run.
        payload_size: bytes of payload (for Herald and FastStream: of the JSON-encoded dict).
        only: row names (or prefixes such as ``"herald"``) to run; None for all.
        max_other_load: repeat a run (at most twice) when other programs kept more than this
            many CPUs busy during it; None never repeats.
    """
    from herald._server import EmbeddedServer

    rows = [
        r for r in ROWS if only is None or any(r.name == o or r.name.startswith(o) for o in only)
    ]
    plan: list[Row] = []
    skipped: dict[str, str] = {}
    for row in rows:
        reason = _missing(row.client)
        if reason:
            skipped[row.name] = reason
        else:
            plan.append(row)
    started = time.time()
    server = EmbeddedServer(persist=False)
    server.start()
    try:
        pid = server_pid(server)
        env = _environment(server.url)
        env["packages"]["faststream"] = _version("faststream")
        admin = _Admin(server.port)
        samples: dict[str, list[dict[str, Any]]] = {r.name: [] for r in plan}
        for _ in range(runs):
            for row in plan:
                if row.name in skipped:
                    continue
                try:
                    samples[row.name].append(
                        _one(row, admin, server.url, duration, payload_size, pid, max_other_load)
                    )
                except Exception as exc:  # the row says why, the others go on
                    skipped[row.name] = f"could not run: {type(exc).__name__}: {exc}"
        admin.close()
    finally:
        server.cleanup()
    out_rows = []
    for row in rows:
        if row.name in skipped and not samples.get(row.name):
            out_rows.append(_skipped_row(row, skipped[row.name]))
        else:
            out_rows.append(_summarise(row, samples[row.name]))
    _add_ratios(out_rows)
    return {
        "benchmark": "durable",
        "parameters": {
            "runs": runs,
            "duration": duration,
            "payload_size": payload_size,
            "only": only,
            "max_other_load": max_other_load,
        },
        "environment": env,
        "pinned": PINNED,
        "wall_seconds": round(time.time() - started, 1),
        "rows": out_rows,
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _missing(client: str) -> str | None:
    """Why a client's rows cannot run here, if they cannot."""
    try:
        if client == "redis-py":
            import redis  # noqa: F401
        elif client == "faststream":
            import faststream.redis  # noqa: F401
    except ImportError as exc:
        return f"{client} is not installed ({exc}); pip install 'herald-pubsub[bench]'"
    return None


# -- one run -----------------------------------------------------------------------------------


def _one(
    row: Row,
    admin: _Admin,
    url: str,
    duration: float,
    payload_size: int,
    server_pid: int | None,
    max_other_load: float | None,
) -> dict[str, Any]:
    repeats = 0
    while True:
        tag = uuid.uuid4().hex[:8]
        topic = f"bench.durable.{row.name}.{tag}"
        key = stream_key(topic) if row.client == "herald" else f"bench:durable:{row.name}:{tag}"
        params = {
            "url": url,
            "topic": topic,
            "key": key,
            "group": GROUP,
            "duration": duration,
            "payload_size": payload_size,
        }
        _configure(admin, row.server_config)
        if row.client == "herald":
            _declare(url, topic)
        prefilled = 0
        if row.kind == "consume":
            prefilled = max(1000, int(row.prefill_rate * duration))
            entry = _entry(row.client, url, payload_size)
            admin.prefill(key, entry, prefilled)
            admin.call("XGROUP", "CREATE", key, GROUP, "0")
        try:
            results, load = run_workers(
                REGISTRY, [row.worker] * row.processes, params, duration * 4 + 60, server_pid
            )
            after = {"stored": int(admin.call("XLEN", key))}
            if row.kind == "consume":
                after["pending"] = int(admin.call("XPENDING", key, GROUP)[0])
                after["prefilled"] = prefilled
        finally:
            admin.call("DEL", key)
            if row.client == "herald":
                _delete(url, topic)
            if row.server_config:
                _configure(admin, (("appendonly", "no"), ("appendfsync", "everysec")))
        other = load.get("other_cores")
        if max_other_load is None or other is None or other <= max_other_load or repeats == 2:
            break
        repeats += 1
    return {"workers": results, "after": after, "machine": {**load, "repeats": repeats}}


def _configure(admin: _Admin, config: tuple[tuple[str, str], ...]) -> None:
    """Apply a row's CONFIG SET; turning AOF on waits for its first rewrite to finish."""
    for k, v in config:
        admin.call("CONFIG", "SET", k, v)
    if any(k == "appendonly" for k, _ in config):
        for _ in range(600):
            info = admin.call("INFO", "persistence")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "aof_rewrite_in_progress:0" in text and "aof_rewrite_scheduled:0" in text:
                return
            time.sleep(0.05)


def _declare(url: str, topic: str) -> None:
    from herald import AsyncClient

    async def go() -> None:
        async with AsyncClient(url, policy_refresh=0, probe_interval=0) as hub:
            await hub.declare(topic, durable=True)

    asyncio.run(go())


def _delete(url: str, topic: str) -> None:
    from herald import AsyncClient

    async def go() -> None:
        async with AsyncClient(url, policy_refresh=0, probe_interval=0) as hub:
            await hub.delete_topic(topic)
            await hub.delete_topic(topic + ".dead")

    asyncio.run(go())


def _entry(client: str, url: str, payload_size: int) -> list[bytes]:
    """The fields of one stream entry as ``client`` publishes a ``payload_size`` message."""
    from ._durable_workers import json_payload

    if client == "herald":
        from herald._core.wire import Encoder

        return [b"m", Encoder("json").envelope(json_payload(payload_size), None)]
    if client == "redis-py":
        return [b"m", b"x" * payload_size]
    return asyncio.run(_faststream_entry(url, json_payload(payload_size)))


async def _faststream_entry(url: str, payload: dict[str, str]) -> list[bytes]:
    # FastStream's own publisher writes one message; its fields are then copied, so the
    # consumer reads exactly what FastStream publishes (format, headers, correlation id).
    import redis.asyncio
    from faststream.redis import RedisBroker

    key = f"bench:durable:faststream-sample:{uuid.uuid4().hex[:8]}"
    quiet = logging.getLogger("herald.bench.faststream")
    quiet.setLevel(logging.WARNING)
    broker = RedisBroker(url, logger=quiet)
    await broker.connect()
    try:
        await broker.publish(cast(Any, payload), stream=key)
    finally:
        await broker.stop()
    r = redis.asyncio.Redis.from_url(url)
    try:
        entries: Any = await r.xrange(key)
        await r.delete(key)
    finally:
        await r.aclose()
    fields: dict[bytes, bytes] = entries[0][1]
    return [x for kv in fields.items() for x in kv]


class _Admin:
    """A raw connection for the parent's own commands: fills streams fast, reads results."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._reader = hiredis.Reader()

    def _replies(self, data: bytes, n: int) -> Any:
        self._sock.sendall(data)
        got = 0
        last: Any = None
        while got < n:
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._reader.feed(chunk)
            while (reply := self._reader.gets()) is not False:
                got += 1
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(str(reply))
                last = reply
        return last

    def call(self, *args: Any) -> Any:
        return self._replies(command(*args), 1)

    def prefill(self, key: str, fields: list[bytes], count: int) -> None:
        chunk = command("XADD", key, "*", *fields) * PREFILL_CHUNK
        for _ in range(count // PREFILL_CHUNK):
            self._replies(chunk, PREFILL_CHUNK)
        rest = count % PREFILL_CHUNK
        if rest:
            self._replies(command("XADD", key, "*", *fields) * rest, rest)

    def close(self) -> None:
        self._sock.close()


# -- results -----------------------------------------------------------------------------------


def _run_rate(row: Row, run: dict[str, Any]) -> float | None:
    """Messages per second of one run: a publisher's own rate; for consumers, all processes'
    messages over the span from the earliest first to the latest last message."""
    workers = run["workers"]
    if any("error" in w for w in workers):
        return None
    if row.kind == "publish":
        rate: float | None = workers[0].get("rate")
        return rate
    total = sum(w["received"] for w in workers)
    span = max(w["last"] for w in workers) - min(w["first"] for w in workers)
    return total / span if span > 0 and total > 1 else None


def _summarise(row: Row, runs: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [w["error"] for run in runs for w in run["workers"] if "error" in w]
    out: dict[str, Any] = {
        "row": row.name,
        "kind": row.kind,
        "label": row.label,
        "processes": row.processes,
        "rate": median([_run_rate(row, run) for run in runs]),
        "other_cores": median([run["machine"].get("other_cores") for run in runs]),
        "repeats": sum(run["machine"].get("repeats", 0) for run in runs),
        "runs": runs,
    }
    if row.kind == "publish":
        sent = [run["workers"][0].get("sent") for run in runs]
        stored = [run["after"]["stored"] for run in runs]
        # Herald's durable publish also stores the warm-up publish: one entry more.
        extra = 1 if row.client == "herald" else 0
        out["all_stored"] = all(
            s is not None and st == s + extra for s, st in zip(sent, stored, strict=True)
        )
    else:
        received = [sum(w.get("received", 0) for w in run["workers"]) for run in runs]
        acked = [sum(w.get("acked", w.get("received", 0)) for w in run["workers"]) for run in runs]
        out["received"] = median(received)
        out["all_acked"] = all(a >= r for a, r in zip(acked, received, strict=True))
        out["pending_after"] = max(run["after"]["pending"] for run in runs)
        out["drained"] = sum(
            1 for run, r in zip(runs, received, strict=True) if r >= run["after"]["prefilled"]
        )
    if errors:
        out["errors"] = errors
    return out


def _skipped_row(row: Row, reason: str) -> dict[str, Any]:
    return {
        "row": row.name,
        "kind": row.kind,
        "label": row.label,
        "processes": row.processes,
        "skipped": reason,
    }


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    by_name = {r["row"]: r for r in rows}
    spec = {r.name: r for r in ROWS}
    for r in rows:
        ratios: dict[str, float | None] = {}
        for ref in spec[r["row"]].versus:
            base = by_name.get(ref, {}).get("rate")
            ratios[ref] = r["rate"] / base if base and r.get("rate") else None
        r["ratios"] = ratios


# -- rendering ---------------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of a :func:`run_durable` result, with the environment and method."""
    env = result["environment"]
    par = result["parameters"]
    lines = [
        f"Durable topics, {env['server']} {env['server_version']} (no persistence), Python "
        f"{env['python']}, {env['cpu_count']} CPUs; {par['payload_size']} B payloads; medians "
        f"of {par['runs']} run(s) of {par['duration']:g} s; pinned: {result['pinned']}.",
        "",
        "| row | processes | msgs/s | vs redis-py | vs FastStream | check | other load | what |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(
                f"| {r['row']} | {r['processes']} | - | - | - | - | - | {r['label']}: "
                f"**not run: {r['skipped']}** |"
            )
            continue
        vs_redis = [f"{_x(v)} ({k})" for k, v in r["ratios"].items() if k.startswith("redis")]
        vs_fs = [_x(v) for k, v in r["ratios"].items() if k.startswith("faststream")]
        if r["kind"] == "publish":
            check = "all stored" if r["all_stored"] else "**stored != sent**"
        else:
            check = "all acked" if r["all_acked"] else "**not all acked**"
            if r["drained"]:
                check += f", drained in {r['drained']} run(s)"
        note = r["label"]
        if r.get("repeats"):
            note += f" ({r['repeats']} noisy run(s) repeated)"
        if r.get("errors"):
            note += f" (ERRORS: {len(r['errors'])})"
        lines.append(
            f"| {r['row']} | {r['processes']} | {_num(r['rate'])} | {', '.join(vs_redis) or '-'} "
            f"| {', '.join(vs_fs) or '-'} | {check} | {_cores(r.get('other_cores'))} | {note} |"
        )
    lines += [
        "",
        "Publish rows: messages / seconds until the server answered the last one (a flush), one "
        "publisher process; a Herald durable publish is an XADD and a PUBLISH (live subscribers "
        "get it too), redis-py's only an XADD. 'all stored': the stream's length equals what "
        "the publisher sent. Consume rows: a stream filled beforehand (each client's own "
        "format; Herald's handler gets a decoded JSON dict), read in one consumer group, every "
        "message acked; msgs/s = messages handled by all processes / (latest - earliest "
        "message). other load = CPUs busy with anything but this row's processes and the "
        "server (/proc/stat; ~0.1 on a quiet machine).",
    ]
    if any(r.get("errors") for r in result["rows"]):
        lines.append("Some runs failed: see the JSON result's 'errors'.")
    return "\n".join(lines)


def _x(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}x"
    return f"{v:.1f}x" if v >= 1 else f"{v:.2f}x"
