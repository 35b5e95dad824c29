"""Waiting until a durable publish is safe: on N replicas (``WAIT``) or on disk (``WAITAOF``).

Both commands block their connection, so both are sent in slices shorter than half the probe
timeout: the liveness probe queued behind them is answered in time, and a slow replica or disk
is a ``NotReplicated``/``NotPersisted``, not a connection declared dead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from herald._core.streams import DurableTopic
from herald._errors import ConfigurationError, NotPersisted, NotReplicated, ServerError
from herald._io.interface import Connection
from herald._models import PubAck


async def wait_replicas(
    link: Connection, durable: DurableTopic, replicas: int, ack: PubAck, timeout: float | None
) -> None:
    """``WAIT`` on the connection that stored the message (its node's, on a cluster).

    WAIT blocks its connection: it is sent in slices shorter than half the probe timeout,
    so that the liveness probe queued behind it is answered in time and a slow replica
    is a ``NotReplicated``, not a connection declared dead."""
    node = link.link_for_key(durable.stream_raw)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    probe = node.probe_timeout if node.probe_interval > 0 else None
    stored_on = node.connection
    while True:
        left = None if deadline is None else max(0.001, deadline - loop.time())
        step = min(x for x in (left, probe / 2 if probe else None, 3600.0) if x is not None)
        acked = int(await node.execute("WAIT", replicas, max(1, int(step * 1000))))
        if stored_on is None or node.connection is not stored_on:
            # A WAIT on another connection (after a reconnect, maybe to a restarted or new
            # primary) says nothing of the write: in doubt.
            raise NotReplicated(0, replicas, ack)
        if acked >= replicas:
            return
        if deadline is not None and loop.time() >= deadline:
            raise NotReplicated(acked, replicas, ack)


async def wait_fsync(
    link: Connection,
    durable: DurableTopic,
    replicas: int,
    ack: PubAck,
    timeout: float | None,
    waits: dict[tuple[int, int], asyncio.Future[Any]],
) -> None:
    """``WAITAOF 1 <replicas>`` on the connection that stored the message: it returns once
    everything that connection wrote is fsynced to the AOF (and on ``replicas`` replicas').

    One WAITAOF covers every write sent before it on its connection, so publishes share
    the one in flight: a publish whose reply came while it was pending was sent before
    it (replies come in order). Like WAIT it blocks the connection, so it is sent in
    slices shorter than half the probe timeout.

    Only a WAITAOF answered on the connection that carried the write counts: one sent
    after a reconnect (queued while the link was down) would answer for the restarted
    server's writes, not this one, so the publish is then in doubt (``NotPersisted``)."""
    node = link.link_for_key(durable.stream_raw)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    probe = node.probe_timeout if node.probe_interval > 0 else None
    key = (id(node), replicas)
    stored_on = node.connection
    while True:
        pending = waits.get(key)
        if pending is None or pending.done():
            left = None if deadline is None else max(0.001, deadline - loop.time())
            step = min(x for x in (left, probe / 2 if probe else None, 3600.0) if x is not None)
            pending = node.execute("WAITAOF", 1, replicas, max(1, int(step * 1000)))
            waits[key] = pending
        try:
            local, fsynced = (int(x) for x in await asyncio.shield(pending))
        except ServerError as exc:
            if "appendonly" in str(exc).lower():
                raise ConfigurationError(
                    "fsync=True needs AOF on the server (appendonly yes)"
                ) from exc
            raise
        if stored_on is None or node.connection is not stored_on:
            raise NotPersisted(0, 0, replicas, ack)
        if local >= 1 and fsynced >= replicas:
            return
        if deadline is not None and loop.time() >= deadline:
            raise NotPersisted(local, fsynced, replicas, ack)
