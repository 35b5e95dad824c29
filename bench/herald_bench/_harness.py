"""Process orchestration and statistics shared by the benchmarks.

Each measurement runs one publisher and one subscriber, each in a fresh process started with
``multiprocessing``'s ``spawn`` method (no state inherited from the parent, the same way a user's
service starts), and a three-party barrier (parent, publisher, subscriber): the publisher starts
its clock only once the subscriber is subscribed and confirmed. Each worker sends one JSON-able
dict back through a pipe and leaves with ``os._exit`` so that no teardown overlaps the next run.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from herald._server import EmbeddedServer

Sample = dict[str, Any]


class Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


Worker = Callable[[dict[str, Any], Barrier], Sample]


class _TimedBarrier:
    """Notes this process's CPU time when the barrier opens: the start of the timed window."""

    def __init__(self, inner: threading.Barrier) -> None:
        self.inner = inner
        self.cpu_at: float | None = None

    def wait(self, timeout: float | None = None) -> int:
        index = self.inner.wait(timeout)
        self.cpu_at = time.process_time()
        return index


BARRIER_TIMEOUT = 60.0


def worker_main(
    registry: str,
    kind: str,
    params: dict[str, Any],
    barrier: threading.Barrier,
    conn: Connection,
) -> None:  # pragma: no cover - runs in a spawned process
    """Entry point of a spawned worker: look ``kind`` up in ``registry`` and run it."""
    # The benchmark server runs without a pubsub output limit on purpose; say so once, in the
    # result, rather than in every worker's log.
    logging.getLogger("herald").setLevel(logging.ERROR)
    try:
        if params.get("herald_path"):  # a row of the compiled core: it must be the one running
            import herald._io

            if not herald._io.compiled():
                raise RuntimeError(f"herald from {params['herald_path']} is not compiled")
        module_name, attr = registry.rsplit(":", 1)
        module = __import__(module_name, fromlist=[attr])
        workers: dict[str, Worker] = getattr(module, attr)
        timed = _TimedBarrier(barrier)
        result = workers[kind](params, timed)
        if timed.cpu_at is not None:
            result["cpu_seconds"] = time.process_time() - timed.cpu_at
    except BaseException:
        barrier.abort()  # the other parties stop waiting instead of hanging
        result = {"error": traceback.format_exc(limit=8)}
    conn.send(result)
    conn.close()
    os._exit(0)


def run_pair(
    registry: str,
    publisher: str,
    subscriber: str,
    params: dict[str, Any],
    timeout: float,
    server_pid: int | None = None,
) -> tuple[Sample, Sample, Sample]:
    """Run ``publisher`` and ``subscriber`` (names in ``registry``) in two fresh processes.

    Returns the two workers' dicts and a dict about the machine during the run (see
    :func:`machine_load`); a worker that failed or did not answer within ``timeout`` seconds
    after the barrier is killed and reported as ``{"error": ...}``.
    """
    (sub, pub), load = run_workers(registry, [subscriber, publisher], params, timeout, server_pid)
    return pub, sub, load


def run_workers(
    registry: str,
    kinds: Sequence[str],
    params: dict[str, Any],
    timeout: float,
    server_pid: int | None = None,
) -> tuple[list[Sample], Sample]:
    """Run one fresh process per name in ``kinds`` (started in that order), behind one barrier
    with the parent; worker ``i`` gets ``params`` plus ``"index": i``.

    Returns the workers' dicts, in the order of ``kinds``, and a dict about the machine during
    the run (see :func:`machine_load`); a worker that failed or did not answer within
    ``timeout`` seconds after the barrier is killed and reported as ``{"error": ...}``.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(kinds) + 1)
    pipes = [ctx.Pipe(duplex=False) for _ in kinds]
    procs = [
        ctx.Process(
            target=worker_main,
            args=(registry, kind, {**params, "index": i}, barrier, w),
            name=f"bench-{kind}-{i}",
            daemon=True,
        )
        for i, (kind, (_, w)) in enumerate(zip(kinds, pipes, strict=True))
    ]
    # params["herald_path"]: the workers import herald from there (the compiled core's tree,
    # build/compiled): a spawned process starts with its parent's sys.path as it is at start().
    extra_path = [params["herald_path"]] if params.get("herald_path") else []
    saved = sys.path[:]
    sys.path[:0] = extra_path
    try:
        for p in procs:
            p.start()
    finally:
        sys.path[:] = saved
    for _, w in pipes:
        w.close()
    results: list[Sample | None] = [None for _ in kinds]
    before = after = _snapshot(None)
    try:
        try:
            barrier.wait(BARRIER_TIMEOUT)
        except threading.BrokenBarrierError:
            timeout = 10.0  # a worker failed while getting ready: collect its error
        before = _snapshot(server_pid)
        deadline = time.monotonic() + timeout
        for i, (r, _) in enumerate(pipes):
            if r.poll(max(0.1, deadline - time.monotonic())):
                try:
                    results[i] = r.recv()
                except EOFError:
                    results[i] = {"error": "worker exited without a result"}
            else:
                results[i] = {"error": f"no result within {timeout:.0f}s"}
        after = _snapshot(server_pid)
    finally:
        for p in procs:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join()
        for r, _ in pipes:
            r.close()
    done = [r if r is not None else {"error": "no result"} for r in results]
    return done, machine_load(before, after, *done)


def _snapshot(server_pid: int | None) -> tuple[float, list[int] | None, float | None]:
    """(monotonic time, /proc/stat's cpu line, the server's CPU seconds), Linux only."""
    stat: list[int] | None = None
    server: float | None = None
    try:
        with open("/proc/stat") as f:
            stat = [int(x) for x in f.readline().split()[1:]]
        if server_pid is not None:
            with open(f"/proc/{server_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return time.monotonic(), stat, server


def machine_load(
    before: tuple[float, list[int] | None, float | None],
    after: tuple[float, list[int] | None, float | None],
    *workers: Sample,
) -> Sample:
    """How busy the machine was during a run, and how much of that was not the benchmark.

    ``busy_cores``: CPUs in use on average (from /proc/stat); ``bench_cores``: what the
    workers (publisher, subscriber, ...) and the server used; ``other_cores``: the rest (other
    programs, the kernel's network work on their behalf); a quiet machine shows ~0.1 or less.
    """
    (t0, s0, srv0), (t1, s1, srv1) = before, after
    wall = t1 - t0
    out: Sample = {"wall_seconds": wall}
    if s0 is None or s1 is None or wall <= 0:
        return out
    delta = [b - a for a, b in zip(s0, s1, strict=False)]
    total = sum(delta[:8])
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
    cpus = os.cpu_count() or 1
    busy = (total - idle) / total * cpus if total else 0.0
    bench = sum(x.get("cpu_seconds", 0.0) for x in workers)
    if srv0 is not None and srv1 is not None:
        bench += srv1 - srv0
    out.update(
        busy_cores=round(busy, 2),
        bench_cores=round(bench / wall, 2),
        other_cores=round(max(busy - bench / wall, 0.0), 2),
    )
    return out


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that exist, ``None`` if none does."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def percentiles(values: list[int], qs: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles of ``values`` (sorted in place)."""
    if not values:
        return [math.nan for _ in qs]
    values.sort()
    n = len(values)
    return [float(values[min(n - 1, max(0, math.ceil(q / 100 * n) - 1))]) for q in qs]


def rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 and count > 0 else None


def worker_params(server: EmbeddedServer, **extra: Any) -> dict[str, Any]:
    """What every worker of a run against ``server`` gets: its url, host and port, and
    ``extra`` (duration, payload size, ...)."""
    return {"url": server.url, "host": "127.0.0.1", "port": server.port, **extra}


def server_pid(server: EmbeddedServer) -> int | None:
    """The server's process id, for :func:`machine_load` (``None`` for one not started here)."""
    return server.process.pid if server.process is not None else None
