"""One registry for the comparison: every worker of the live, durable and request benchmarks
(reused as they are) and the comparison's own peers, each name prefixed by its module."""

from __future__ import annotations

from ._compare_fanout import WORKERS as FANOUT
from ._compare_peers import (
    broadcaster_pub,
    broadcaster_sub,
    faststream_pub,
    faststream_sub,
    nats_pub,
    nats_sub,
    pika_pub,
    pika_sub,
)
from ._compare_queues import WORKERS as QUEUES
from ._durable_workers import WORKERS as DURABLE
from ._harness import Worker
from ._live_workers import WORKERS as LIVE
from .request import WORKERS as REQUEST

PEERS: dict[str, Worker] = {
    "faststream-pub": faststream_pub,
    "faststream-sub": faststream_sub,
    "broadcaster-pub": broadcaster_pub,
    "broadcaster-sub": broadcaster_sub,
    "nats-pub": nats_pub,
    "nats-sub": nats_sub,
    "pika-pub": pika_pub,
    "pika-sub": pika_sub,
}

WORKERS: dict[str, Worker] = {
    **{f"live:{k}": v for k, v in LIVE.items()},
    **{f"peer:{k}": v for k, v in PEERS.items()},
    **{f"fan:{k}": v for k, v in FANOUT.items()},
    **{f"durable:{k}": v for k, v in DURABLE.items()},
    **{f"request:{k}": v for k, v in REQUEST.items()},
    **{f"queue:{k}": v for k, v in QUEUES.items()},
}
