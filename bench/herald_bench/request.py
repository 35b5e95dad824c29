"""The request/reply benchmark: round trips per second with one responder in another process.

Herald's ``request()`` (sequential, and with many requests in flight) next to redis-py doing the
same pattern naively: the requester publishes a JSON request carrying its reply channel and an
id, then reads its own Pub/Sub connection with ``get_message`` until the reply with that id comes;
the responder reads requests with ``get_message`` and publishes each answer. Every row runs against
one embedded Valkey started for the run, with a requester process and a responder process per
run (fresh, ``spawn``; the process helpers of :mod:`herald_bench._harness`).

Example::

    from herald_bench.request import format_table, run_request

    print(format_table(run_request(runs=1, duration=1.0)))
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ._harness import (
    Barrier,
    Sample,
    Worker,
    median,
    percentiles,
    rate,
    run_pair,
    server_pid,
)
from .live import PINNED, _cores, _environment, _has_redis, _num, _us

REGISTRY = "herald_bench.request:WORKERS"
END = "END"  # published (not requested) after the timed window: the responder stops
WARMUP = 0.2  # seconds of round trips before the clock starts
QUANTILES = (50.0, 99.0)
perf_counter = time.perf_counter
perf_counter_ns = time.perf_counter_ns


@dataclass(frozen=True)
class Row:
    name: str
    requester: str
    responder: str
    concurrency: int
    label: str


ROWS = (
    Row(
        "herald-async",
        "herald-async",
        "herald-handler",
        1,
        "Herald AsyncClient: await request() one at a time -> handler returning the reply",
    ),
    Row(
        "herald-async-64",
        "herald-async",
        "herald-handler",
        64,
        "Herald AsyncClient: 64 tasks, each awaiting request() in a loop -> handler",
    ),
    Row(
        "herald-group",
        "herald-async",
        "herald-group",
        1,
        "Herald AsyncClient: await request() one at a time -> a responder group's one member",
    ),
    Row(
        "herald-group-64",
        "herald-async",
        "herald-group",
        64,
        "Herald AsyncClient: 64 tasks awaiting request() -> a responder group's one member "
        "(concurrency=64)",
    ),
    Row(
        "herald-sync",
        "herald-sync",
        "herald-sync-handler",
        1,
        "Herald Client.request() from the main thread -> Client handler thread",
    ),
    Row(
        "herald-sync-8",
        "herald-sync",
        "herald-handler",
        8,
        "Herald Client.request() from 8 threads -> AsyncClient handler",
    ),
    Row(
        "redis-sync",
        "redispy-sync",
        "redispy-sync-responder",
        1,
        "redis-py sync: publish, then get_message() until the reply -> get_message + publish",
    ),
    Row(
        "redis-sync-64",
        "redispy-sync",
        "redispy-sync-responder",
        64,
        "redis-py sync: 64 publishes, then get_message() until their 64 replies (windows of 64)",
    ),
    Row(
        "redis-asyncio",
        "redispy-async",
        "redispy-sync-responder",
        1,
        "redis-py asyncio: await publish, then await get_message() until the reply",
    ),
)


def run_request(
    *,
    runs: int = 3,
    duration: float = 2.0,
    payload_size: int = 100,
    only: list[str] | None = None,
    max_other_load: float | None = None,
) -> dict[str, Any]:
    """Run the request/reply benchmark and return its result (JSON-able).

    Args:
        runs: runs per row (rows take turns); the table shows medians.
        duration: seconds each requester sends requests per run, after a short warm-up.
        payload_size: bytes of the request's JSON payload (the reply echoes it).
        only: row names (or prefixes such as ``"herald"``) to run; None for all.
        max_other_load: repeat a run (at most twice) when other programs kept more than this
            many CPUs busy during it; None never repeats.
    """
    from herald._server import EmbeddedServer

    have_redis = _has_redis()
    plan = [
        r
        for r in ROWS
        if (only is None or any(r.name == o or r.name.startswith(o) for o in only))
        and (have_redis or "redispy" not in r.requester + r.responder)
    ]
    started = time.time()
    server = EmbeddedServer(persist=False)
    server.start()
    try:
        pid = server_pid(server)
        env = _environment(server.url)
        samples: list[list[dict[str, Sample]]] = [[] for _ in plan]
        for _ in range(runs):
            for i, row in enumerate(plan):
                params = {
                    "url": server.url,
                    "topic": f"bench.request.{row.name}.{uuid.uuid4().hex[:8]}",
                    "duration": duration,
                    "payload_size": payload_size,
                    "concurrency": row.concurrency,
                }
                repeats = 0
                while True:
                    req, resp, load = run_pair(
                        REGISTRY, row.requester, row.responder, params, duration * 4 + 30, pid
                    )
                    other = load.get("other_cores")
                    if max_other_load is None or other is None or other <= max_other_load:
                        break
                    if repeats == 2:
                        break
                    repeats += 1
                load["repeats"] = repeats
                samples[i].append({"requester": req, "responder": resp, "machine": load})
    finally:
        server.cleanup()
    rows = [_summarise(row, samples[i]) for i, row in enumerate(plan)]
    by_name = {r["row"]: r for r in rows}
    for r in rows:
        peer = by_name.get("redis-sync-64" if r["concurrency"] > 1 else "redis-sync")
        if peer and peer is not r and peer["round_trips_per_s"] and r["round_trips_per_s"]:
            r["x_redis_sync"] = r["round_trips_per_s"] / peer["round_trips_per_s"]
    return {
        "benchmark": "request",
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
        "rows": rows,
    }


def _summarise(row: Row, samples: list[dict[str, Sample]]) -> dict[str, Any]:
    reqs = [s["requester"] for s in samples]
    errors = [s["error"] for s in reqs + [s["responder"] for s in samples] if "error" in s]
    out: dict[str, Any] = {
        "row": row.name,
        "label": row.label,
        "concurrency": row.concurrency,
        "round_trips_per_s": median([r.get("rate") for r in reqs]),
        "p50_us": median([r.get("p50_us") for r in reqs]),
        "p99_us": median([r.get("p99_us") for r in reqs]),
        "other_cores": median([s["machine"].get("other_cores") for s in samples]),
        "repeats": sum(s["machine"].get("repeats", 0) for s in samples),
        "runs": samples,
    }
    if errors:
        out["errors"] = errors
    return out


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of a :func:`run_request` result."""
    env = result["environment"]
    par = result["parameters"]
    lines = [
        f"Request/reply, {env['server']} {env['server_version']}, Python {env['python']}, "
        f"{env['cpu_count']} CPUs; {par['payload_size']} B payloads; medians of {par['runs']} "
        f"run(s) of {par['duration']:g} s; one responder process; pinned: {result['pinned']}.",
        "",
        "| row | in flight | round trips/s | vs redis-py sync | p50 | p99 | other load | what |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        ratio = r.get("x_redis_sync")
        note = r["label"]
        if r.get("repeats"):
            note += f" ({r['repeats']} noisy run(s) repeated)"
        if r.get("errors"):
            note += f" (ERRORS: {len(r['errors'])})"
        lines.append(
            f"| {r['row']} | {r['concurrency']} | {_num(r['round_trips_per_s'])} "
            f"| {'-' if ratio is None else f'{ratio:.1f}x'} | {_us(r['p50_us'])} "
            f"| {_us(r['p99_us'])} | {_cores(r.get('other_cores'))} | {note} |"
        )
    lines += [
        "",
        "round trips/s = replies received by the requester / seconds, after a "
        f"{WARMUP:g} s warm-up; p50/p99 = one request's round trip as its caller sees it. "
        "Ratios compare with the redis-py sync row of the same kind (sequential, or 64 in "
        "flight). other load = CPUs busy with anything but this row's processes and the server.",
    ]
    return "\n".join(lines)


# -- results -----------------------------------------------------------------------------------


def _result(count: int, seconds: float, latencies_ns: list[int], **extra: Any) -> Sample:
    p50, p99 = percentiles(latencies_ns, QUANTILES)
    return {
        "round_trips": count,
        "seconds": seconds,
        "rate": rate(count, seconds),
        "p50_us": p50 / 1000,
        "p99_us": p99 / 1000,
        **extra,
    }


def _payload(size: int) -> dict[str, str]:
    return {"p": "x" * max(size - 8, 1)}  # {"p":"..."}: size bytes of JSON


# -- Herald ------------------------------------------------------------------------------------


def herald_async_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_herald_async_requester(params, barrier))


async def _herald_async_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    topic = params["topic"]
    data = _payload(params["payload_size"])
    lat: list[int] = []
    count = 0
    async with herald.AsyncClient(params["url"]) as hub:
        request = hub.request
        barrier.wait()

        async def loop(until: float, record: bool) -> None:
            nonlocal count
            while perf_counter() < until:
                t = perf_counter_ns()
                await request(topic, data, timeout=5.0)
                if record:
                    lat.append(perf_counter_ns() - t)
                    count += 1

        n = params["concurrency"]
        await asyncio.gather(*(loop(perf_counter() + WARMUP, False) for _ in range(n)))
        t0 = perf_counter()
        await asyncio.gather(*(loop(t0 + params["duration"], True) for _ in range(n)))
        seconds = perf_counter() - t0
        await hub.publish(topic, END)
        await hub.flush()
        return _result(count, seconds, lat, late_replies=hub.stats.late_replies)


def herald_sync_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    topic = params["topic"]
    data = _payload(params["payload_size"])
    n = params["concurrency"]
    lats: list[list[int]] = [[] for _ in range(n)]
    with herald.Client(params["url"]) as hub:
        request = hub.request
        barrier.wait()

        def loop(until: float, lat: list[int] | None) -> None:
            while perf_counter() < until:
                t = perf_counter_ns()
                request(topic, data, timeout=5.0)
                if lat is not None:
                    lat.append(perf_counter_ns() - t)

        def run(until: float, record: bool) -> None:
            threads = [
                threading.Thread(target=loop, args=(until, lats[i] if record else None))
                for i in range(n)
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()

        run(perf_counter() + WARMUP, False)
        t0 = perf_counter()
        run(t0 + params["duration"], True)
        seconds = perf_counter() - t0
        hub.publish(topic, END)
        hub.flush()
        lat = [x for part in lats for x in part]
        return _result(len(lat), seconds, lat)


def herald_handler_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_herald_handler_responder(params, barrier))


async def _herald_handler_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    done = asyncio.get_running_loop().create_future()
    answered = 0

    def answer(msg: herald.Message) -> Any:
        nonlocal answered
        if msg.data == END:
            if not done.done():
                done.set_result(None)
            return None
        answered += 1
        return msg.data

    async with herald.AsyncClient(params["url"]) as hub:
        sub = await hub.subscribe(params["topic"], handler=answer)
        barrier.wait()
        await asyncio.wait_for(done, params["duration"] * 3 + 30)
        return {"answered": answered, "handler_errors": sub.stats.handler_errors}


def herald_group_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_herald_group_responder(params, barrier))


async def _herald_group_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    done = asyncio.get_running_loop().create_future()
    answered = 0

    def answer(msg: herald.Message) -> Any:
        nonlocal answered
        answered += 1
        return msg.data

    def watch(msg: herald.Message) -> None:  # END is published, not requested
        if msg.data == END and not done.done():
            done.set_result(None)

    async with herald.AsyncClient(params["url"]) as hub:
        await hub.subscribe(params["topic"], handler=watch)
        async with hub.respond(
            params["topic"], answer, group="bench", concurrency=max(1, params["concurrency"])
        ):
            barrier.wait()
            await asyncio.wait_for(done, params["duration"] * 3 + 30)
            return {"answered": answered}


def herald_sync_handler_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    done = threading.Event()
    answered = 0

    def answer(msg: herald.Message) -> Any:
        nonlocal answered
        if msg.data == END:
            done.set()
            return None
        answered += 1
        return msg.data

    with herald.Client(params["url"]) as hub:
        sub = hub.subscribe(params["topic"], handler=answer)
        barrier.wait()
        done.wait(params["duration"] * 3 + 30)
        return {"answered": answered, "handler_errors": sub.stats.handler_errors}


# -- redis-py: the same pattern, written naively ------------------------------------------------


def redispy_sync_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis

    topic = params["topic"]
    inbox = f"inbox.{uuid.uuid4().hex}"
    data = _payload(params["payload_size"])
    window = params["concurrency"]
    r = redis.Redis.from_url(params["url"])
    ps = r.pubsub()
    ps.subscribe(inbox)
    ps.get_message(timeout=5.0)  # the subscribe confirmation
    lat: list[int] = []
    seq = 0

    def window_of_requests(record: bool) -> None:
        nonlocal seq
        sent: dict[int, int] = {}
        for _ in range(window):
            seq += 1
            sent[seq] = perf_counter_ns()
            r.publish(topic, json.dumps({"id": seq, "reply_to": inbox, "data": data}))
        while sent:
            m = ps.get_message(timeout=5.0)
            if m is None:
                raise TimeoutError("no reply within 5 s")
            if m["type"] != "message":
                continue
            t = sent.pop(json.loads(m["data"])["id"], None)
            if record and t is not None:
                lat.append(perf_counter_ns() - t)

    try:
        barrier.wait()
        until = perf_counter() + WARMUP
        while perf_counter() < until:
            window_of_requests(False)
        t0 = perf_counter()
        until = t0 + params["duration"]
        while perf_counter() < until:
            window_of_requests(True)
        seconds = perf_counter() - t0
        r.publish(topic, json.dumps(END))
        return _result(len(lat), seconds, lat)
    finally:
        ps.close()
        r.close()


def redispy_async_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_redispy_async_requester(params, barrier))


async def _redispy_async_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis.asyncio

    topic = params["topic"]
    inbox = f"inbox.{uuid.uuid4().hex}"
    data = _payload(params["payload_size"])
    r = redis.asyncio.Redis.from_url(params["url"])
    ps = r.pubsub()
    await ps.subscribe(inbox)
    await ps.get_message(timeout=5.0)
    lat: list[int] = []
    seq = 0

    async def one(record: bool) -> None:
        nonlocal seq
        seq += 1
        t = perf_counter_ns()
        await r.publish(topic, json.dumps({"id": seq, "reply_to": inbox, "data": data}))
        while True:
            m = await ps.get_message(timeout=5.0)
            if m is None:
                raise TimeoutError("no reply within 5 s")
            if m["type"] == "message" and json.loads(m["data"])["id"] == seq:
                break
        if record:
            lat.append(perf_counter_ns() - t)

    try:
        barrier.wait()
        until = perf_counter() + WARMUP
        while perf_counter() < until:
            await one(False)
        t0 = perf_counter()
        until = t0 + params["duration"]
        while perf_counter() < until:
            await one(True)
        seconds = perf_counter() - t0
        await r.publish(topic, json.dumps(END))
        return _result(len(lat), seconds, lat)
    finally:
        await ps.aclose()
        await r.aclose()


def redispy_sync_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis

    r = redis.Redis.from_url(params["url"])
    ps = r.pubsub()
    ps.subscribe(params["topic"])
    ps.get_message(timeout=5.0)
    answered = 0
    deadline = perf_counter() + params["duration"] * 3 + 30
    try:
        barrier.wait()
        while perf_counter() < deadline:
            m = ps.get_message(timeout=1.0)
            if m is None or m["type"] != "message":
                continue
            req = json.loads(m["data"])
            if req == END:
                break
            r.publish(req["reply_to"], json.dumps({"id": req["id"], "data": req["data"]}))
            answered += 1
        return {"answered": answered}
    finally:
        ps.close()
        r.close()


WORKERS: dict[str, Worker] = {
    "herald-async": herald_async_requester,
    "herald-sync": herald_sync_requester,
    "herald-handler": herald_handler_responder,
    "herald-group": herald_group_responder,
    "herald-sync-handler": herald_sync_handler_responder,
    "redispy-sync": redispy_sync_requester,
    "redispy-async": redispy_async_requester,
    "redispy-sync-responder": redispy_sync_responder,
}
