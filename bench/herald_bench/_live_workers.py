"""Publishers and subscribers of the live benchmark, one function per client, run in workers.

Every worker gets the same ``params`` (``url``, ``host``, ``port``, ``channel``, ``duration``,
``payload_size``, ``rate``) and the barrier. ``rate == 0`` measures throughput: the publisher
publishes as fast as it can for ``duration`` seconds after the barrier, then an end marker (a
3-byte payload) on the same channel, which therefore arrives after every timed message. The
subscriber counts from its first message to the end marker, or for at most ``duration`` seconds
of receiving when it is slower than the publisher, and reports count / (last - first).

``rate > 0`` measures latency: the publisher paces itself in bursts (one burst per millisecond,
sized from ``perf_counter``, never a sleep per message) and puts ``time.monotonic_ns()`` (the
system-wide CLOCK_MONOTONIC on Linux) in each payload; the subscriber subtracts it from its own
``monotonic_ns()`` on arrival. Messages published in the first tenth of the run are warm-up.

The workers are in ``_live_herald`` and ``_live_peers``; what they share in ``_live_common``.
The hot loops are written out per client on purpose: a shared helper called per message would add
the same cost to every row and hide the differences being measured.
"""

from __future__ import annotations

from ._harness import Worker
from ._live_herald import (
    herald_async_nobatch_pub,
    herald_async_pub,
    herald_handler_sub,
    herald_iter_sub,
    herald_many_pub,
    herald_sync_pub,
)
from ._live_peers import (
    raw_herald_pub,
    raw_pub,
    raw_sub,
    redispy_async_pipe_pub,
    redispy_async_pub,
    redispy_async_sub,
    redispy_sync_pipe_pub,
    redispy_sync_pub,
    redispy_sync_sub,
)

WORKERS: dict[str, Worker] = {
    "herald-async": herald_async_pub,
    "herald-async-nobatch": herald_async_nobatch_pub,
    "herald-many": herald_many_pub,
    "herald-sync": herald_sync_pub,
    "herald-handler": herald_handler_sub,
    "herald-iter": herald_iter_sub,
    "redispy-async": redispy_async_pub,
    "redispy-async-pipe": redispy_async_pipe_pub,
    "redispy-async-sub": redispy_async_sub,
    "redispy-sync": redispy_sync_pub,
    "redispy-sync-pipe": redispy_sync_pipe_pub,
    "redispy-sync-sub": redispy_sync_sub,
    "raw": raw_pub,
    "raw-herald": raw_herald_pub,
    "raw-sub": raw_sub,
}
