"""What the live benchmark's workers share: payloads, pacing, result dicts (see _live_workers)."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._harness import Sample, percentiles, rate

# The event loop every worker runs on: HERALD_BENCH_LOOP=uvloop runs a whole benchmark (Herald,
# the raw client and the peers alike) on uvloop, for a row-by-row comparison with asyncio's.
LOOP = os.environ.get("HERALD_BENCH_LOOP", "asyncio")
T = TypeVar("T")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, on uvloop when ``HERALD_BENCH_LOOP=uvloop``."""
    if LOOP == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


END = b"END"  # the end marker: every real payload is longer than 3 bytes
BATCH = 1000  # pipelined publishers send this many commands per write
BURST_INTERVAL = 0.001  # latency publishers: one burst per millisecond
WARMUP_FRACTION = 0.1
QUANTILES = (50.0, 99.0, 99.9)
perf_counter = time.perf_counter
monotonic_ns = time.monotonic_ns


# -- payloads ----------------------------------------------------------------------------------


def bytes_payload(size: int) -> bytes:
    return b"x" * max(size, 4)


def stamped_bytes(size: int) -> Callable[[], bytes]:
    pad = b"x" * max(size - 19, 0)
    return lambda: b"%019d" % monotonic_ns() + pad


def json_payload(size: int) -> dict[str, str]:
    """A dict whose JSON encoding is ``size`` bytes: what a Herald user would publish."""
    return {"p": "x" * max(size - 8, 1)}  # {"p":"..."}


def stamped_json(size: int) -> Callable[[], dict[str, Any]]:
    pad = "x" * max(size - len(f'{{"t":{monotonic_ns()},"p":""}}'), 1)
    return lambda: {"t": monotonic_ns(), "p": pad}


def publish_command(channel: str, payload: bytes) -> bytes:
    ch = channel.encode()
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(ch),
        ch,
        len(payload),
        payload,
    )


# -- results -----------------------------------------------------------------------------------


def pub_result(sent: int, t0: float, t1: float, **extra: Any) -> Sample:
    return {"sent": sent, "seconds": t1 - t0, "rate": rate(sent, t1 - t0), **extra}


def sub_result(
    received: int, first: float, last: float, latencies: list[int] | None = None, **extra: Any
) -> Sample:
    out: Sample = {
        "received": received,
        "seconds": last - first if received else 0.0,
        "rate": rate(received, last - first) if received > 1 else None,
        **extra,
    }
    if latencies is not None:
        p = percentiles(latencies, QUANTILES)
        out["latency_us"] = {
            "samples": len(latencies),
            "p50": p[0] / 1000,
            "p99": p[1] / 1000,
            "p99_9": p[2] / 1000,
            "max": latencies[-1] / 1000 if latencies else math.nan,
        }
    return out


def limit(params: dict[str, Any]) -> float:
    """How long a subscriber waits for its end marker before giving up."""
    return float(params["duration"]) * 3 + 30


# -- pacing (latency mode) ---------------------------------------------------------------------


async def paced_async(params: dict[str, Any], burst: Callable[[int], Awaitable[None]]) -> Sample:
    target_rate = float(params["rate"])
    duration = float(params["duration"])
    sent = 0
    t0 = perf_counter()
    end = t0 + duration
    while True:
        now = perf_counter()
        if now >= end:
            break
        due = int((now - t0) * target_rate) - sent
        if due > 0:
            await burst(due)
            sent += due
        await asyncio.sleep(BURST_INTERVAL)
    return pub_result(sent, t0, perf_counter())


def paced_sync(params: dict[str, Any], burst: Callable[[int], None]) -> Sample:
    target_rate = float(params["rate"])
    duration = float(params["duration"])
    sent = 0
    t0 = perf_counter()
    end = t0 + duration
    while True:
        now = perf_counter()
        if now >= end:
            break
        due = int((now - t0) * target_rate) - sent
        if due > 0:
            burst(due)
            sent += due
        time.sleep(BURST_INTERVAL)
    return pub_result(sent, t0, perf_counter())
