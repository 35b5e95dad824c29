"""Distributed task dispatch with result aggregation, surviving a worker killed midway.

    python examples/task_dispatch/main.py                 # embedded Valkey, 3 workers
    python examples/task_dispatch/main.py --url redis://localhost:6379 --parts 40

The coordinator splits a job (the sum of i*i for i below ``--size``) into parts and publishes
them on the durable topic ``jobs.parts``: a work queue, one consumer group ``workers``. It
starts worker processes (this file with ``worker``), each a consumer of that group. A worker
announces each part on stdout when it starts it, computes it, publishes the partial result on
the durable topic ``jobs.results`` with an idempotency key (``msg_id``), and only then acks the
part. Once the first worker has started its second part, the coordinator kills it with
SIGKILL: the part it held is never acked, so after ``ack_wait`` another worker claims it and
the job still completes. The coordinator reads ``jobs.results`` (a consumer group of its own),
keeps one result per part, and prints a JSON summary as its last line: exit status 0 when the
total is right.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import herald

PARTS, RESULTS = "jobs.parts", "jobs.results"
ACK_WAIT = 1.0  # seconds before a part a worker did not ack goes to another worker


# -- the worker ----------------------------------------------------------------------------------


def compute(lo: int, hi: int) -> int:
    time.sleep(0.05)  # stands for real work, long enough to be killed in the middle of it
    return sum(i * i for i in range(lo, hi))


async def worker(url: str, name: str) -> None:
    async with (
        herald.AsyncClient(url) as hub,
        hub.consume(
            PARTS, "workers", name, start="all", ack_wait=ACK_WAIT, batch=1, max_ack_pending=1
        ) as parts,
    ):
        async for msg in parts:
            part = msg.data
            print(json.dumps({"started": part["part"], "delivery": msg.deliveries}), flush=True)
            value = await asyncio.to_thread(compute, part["lo"], part["hi"])
            result = {"job": part["job"], "part": part["part"], "value": value,
                      "worker": name, "delivery": msg.deliveries}  # fmt: skip
            # The key makes a repeated result (a part delivered twice) a no-op on the server.
            await hub.publish(RESULTS, result, msg_id=f"{part['job']}-{part['part']}")
            await msg.ack()


# -- the coordinator -----------------------------------------------------------------------------


def start_worker(url: str, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "worker", "--url", url, "--name", name],
        stdout=subprocess.PIPE,
        text=True,
    )


async def watch(proc: subprocess.Popen[str], victim: bool, killed: asyncio.Event) -> None:
    """Read a worker's announcements; kill it (SIGKILL) once it starts its second part."""
    assert proc.stdout is not None
    started = 0
    while line := await asyncio.to_thread(proc.stdout.readline):
        started += "started" in json.loads(line)
        if victim and started == 2 and not killed.is_set():
            os.kill(proc.pid, signal.SIGKILL)
            killed.set()


async def coordinate(
    url: str, parts: int, size: int, workers: int, timeout: float = 60.0
) -> dict[str, Any]:
    job = f"job-{os.getpid()}-{int(time.time())}"
    got: dict[int, dict[str, Any]] = {}
    killed = asyncio.Event()
    async with herald.AsyncClient(url) as hub:
        await hub.declare(PARTS, durable=True)
        await hub.declare(RESULTS, durable=True)
        # A group of its own, created now: it reads the results published from here on.
        async with hub.consume(RESULTS, f"coordinator-{job}") as results:
            step = -(-size // parts)
            for i in range(parts):
                lo, hi = i * step, min(size, (i + 1) * step)
                await hub.publish(PARTS, {"job": job, "part": i, "lo": lo, "hi": hi})
            procs = [start_worker(url, f"worker-{n}") for n in range(workers)]
            watchers = [asyncio.create_task(watch(p, n == 0, killed)) for n, p in enumerate(procs)]
            try:
                async with asyncio.timeout(timeout):
                    async for msg in results:
                        if msg.data["job"] == job:  # parts of an older job may be left
                            got.setdefault(msg.data["part"], msg.data)
                        if len(got) == parts:
                            break
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    await asyncio.to_thread(p.wait)
                for w in watchers:
                    w.cancel()
    total = sum(r["value"] for r in got.values())
    expected = sum(i * i for i in range(size))
    return {
        "job": job,
        "parts": parts,
        "results": len(got),
        "total": total,
        "expected": expected,
        "correct": total == expected,
        "killed": "worker-0" if killed.is_set() else None,
        "by_worker": {
            w: sum(1 for r in got.values() if r["worker"] == w)
            for w in sorted({r["worker"] for r in got.values()})
        },
        "redelivered_parts": sorted(p for p, r in got.items() if r["delivery"] > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("role", nargs="?", default="coordinator", choices=["coordinator", "worker"])
    parser.add_argument("--url", help="Redis/Valkey URL (default: an embedded Valkey)")
    parser.add_argument("--name", default="worker")
    parser.add_argument("--parts", type=int, default=24)
    parser.add_argument("--size", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    if args.role == "worker":
        asyncio.run(worker(args.url, args.name))
        return
    if args.url is None:
        with herald.EmbeddedServer(persist=False) as server:
            summary = asyncio.run(coordinate(server.url, args.parts, args.size, args.workers))
    else:
        summary = asyncio.run(coordinate(args.url, args.parts, args.size, args.workers))
    print(json.dumps(summary))
    sys.exit(0 if summary["correct"] else 1)


if __name__ == "__main__":
    main()
