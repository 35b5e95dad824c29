"""The comparison's rows: which workers run each client in each workload (see compare.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REGISTRY = "herald_bench._compare_workers:WORKERS"
NATS_URL = "nats://127.0.0.1:4222"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
GROUP = "bench"

# peer id -> (display name, Redis-based, packages it needs)
PEERS: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "herald": ("Herald", True, ()),
    "redis-py": ("redis-py", True, ("redis",)),
    "faststream": ("FastStream", True, ("faststream.redis",)),
    "broadcaster": ("broadcaster", True, ("broadcaster", "redis")),
    "nats": ("nats-py", False, ("nats",)),
    "rabbitmq": ("aio-pika", False, ("aio_pika",)),
    "raw": ("raw hiredis (ceiling)", True, ()),
}


@dataclass(frozen=True)
class Row:
    """One client in one workload."""

    workload: str
    name: str
    peer: str
    label: str
    kinds: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)


# The compiled core (`make compiled`: herald._core built with mypyc into build/compiled). With
# --compiled, Herald's rows run a second time on it, as "<row>-compiled", in the same run.
COMPILED_TREE = Path(__file__).resolve().parents[2] / "build" / "compiled"


def compiled_tree() -> Path | None:
    """build/compiled when it holds a compiled core, else None."""
    return COMPILED_TREE if any(COMPILED_TREE.glob("herald/_core/wire.*.so")) else None


def with_compiled(rows: list[Row]) -> list[Row]:
    """``rows``, each Herald row followed by its twin on the compiled core."""
    tree = COMPILED_TREE
    out: list[Row] = []
    for row in rows:
        out.append(row)
        if row.peer == "herald":
            out.append(
                replace(
                    row,
                    name=f"{row.name}-compiled",
                    label=f"{row.label} [compiled core]",
                    params={**row.params, "herald_path": str(tree)},
                )
            )
    return out


def _live_rows() -> list[Row]:
    w = "live"
    return [
        Row(w, "herald", "herald", "Herald AsyncClient: await publish() -> handler",
            ("live:herald-handler", "live:herald-async")),
        Row(w, "redis-py-asyncio", "redis-py", "redis-py asyncio: await publish() -> listen()",
            ("live:redispy-async-sub", "live:redispy-async")),
        Row(w, "redis-py-asyncio-pipe", "redis-py",
            "redis-py asyncio: pipelines of 1000 publish -> listen()",
            ("live:redispy-async-sub", "live:redispy-async-pipe")),
        Row(w, "redis-py-sync-pipe", "redis-py",
            "redis-py sync: pipelines of 1000 publish -> listen()",
            ("live:redispy-sync-sub", "live:redispy-sync-pipe")),
        Row(w, "faststream", "faststream",
            "FastStream RedisBroker: await publish(channel=) -> @subscriber(channel=)",
            ("peer:faststream-sub", "peer:faststream-pub")),
        Row(w, "broadcaster", "broadcaster",
            "broadcaster 'redis://': publish() -> async with subscribe() (as shipped)",
            ("peer:broadcaster-sub", "peer:broadcaster-pub")),
        Row(w, "broadcaster-fixed", "broadcaster",
            "broadcaster, with its listener woken after subscribing (see notes)",
            ("peer:broadcaster-sub", "peer:broadcaster-pub"), {"broadcaster_fix": True}),
        Row(w, "nats", "nats", "nats-py core: await publish() -> subscribe(cb=)",
            ("peer:nats-sub", "peer:nats-pub")),
        Row(w, "rabbitmq", "rabbitmq",
            "aio-pika: fanout exchange publish (no confirms) -> exclusive queue, no_ack",
            ("peer:pika-sub", "peer:pika-pub")),
        Row(w, "raw", "raw", "raw: pre-packed PUBLISH x1000 per write -> Protocol + hiredis",
            ("live:raw-sub", "live:raw")),
    ]  # fmt: skip


FANOUT_PEERS = (
    # row name, peer, worker prefix, deliveries per run (count x subscribers), label
    ("herald", "herald", "herald", 1_000_000, "Herald AsyncClient publish -> handlers"),
    ("redis-py-asyncio", "redis-py", "redispy", 1_000_000, "redis-py asyncio pipelines"),
    ("faststream", "faststream", "faststream", 20_000, "FastStream channel subscribers"),
    ("broadcaster-fixed", "broadcaster", "broadcaster", 20_000, "broadcaster (woken)"),
    ("nats", "nats", "nats", 1_000_000, "nats-py core"),
    ("rabbitmq", "rabbitmq", "pika", 200_000, "aio-pika fanout exchange, no_ack"),
    ("raw", "raw", "raw", 1_000_000, "raw pipelined PUBLISH -> Protocol + hiredis"),
)


def _fanout_rows(subscribers: int, scale: float) -> list[Row]:
    w = f"fanout-{subscribers}"
    return [
        Row(
            w,
            name,
            peer,
            f"{label}; {subscribers} connections",
            (f"fan:{prefix}-sub", f"fan:{prefix}-sub", f"fan:{prefix}-pub"),
            {
                "conns": subscribers // 2,
                "count": max(100, int(deliveries * scale) // subscribers),
                "subscribers": subscribers,
            },
        )
        for name, peer, prefix, deliveries, label in FANOUT_PEERS
    ]


def _durable_rows() -> list[Row]:
    p, c = "durable-publish", "durable-consume"
    four = 4
    return [
        Row(p, "herald-confirmed-64", "herald",
            "Herald: 64 tasks awaiting publish() (each confirmed)", ("durable:herald-concurrent",)),
        Row(p, "herald-many", "herald", "Herald: await publish_many() of 1000",
            ("durable:herald-many",)),
        Row(p, "redis-py-pipe", "redis-py", "redis-py sync: pipelines of 1000 XADD",
            ("durable:redispy-xadd-pipe",)),
        Row(p, "nats-jetstream", "nats",
            "nats-py JetStream publish_async (4000 in flight), then all acks; memory storage",
            ("queue:js-pub",)),
        Row(p, "rabbitmq", "rabbitmq",
            "aio-pika: publisher confirms, 64 publishes in flight; classic queue",
            ("queue:pika-confirm-pub",)),
        Row(c, "herald", "herald", "Herald: consume(handler=), auto-ack; 4 processes",
            ("durable:herald-handler",) * four, {"prefill_rate": 700_000}),
        Row(c, "redis-py", "redis-py", "redis-py sync: XREADGROUP COUNT 100 + XACK; 4 processes",
            ("durable:redispy-consumer",) * four, {"prefill_rate": 700_000}),
        Row(c, "faststream", "faststream",
            "FastStream StreamSub(group=..., max_records=100), ack after handler; 4 processes",
            ("durable:faststream-consumer",) * four,
            {"prefill_rate": 10_000, "faststream_count": 100}),
        Row(c, "nats-jetstream", "nats",
            "nats-py JetStream pull consumer, fetch(100), ack each; 4 processes",
            ("queue:js-consumer",) * four, {"prefill_rate": 100_000}),
        Row(c, "rabbitmq", "rabbitmq", "aio-pika: prefetch 100, ack each; 4 processes",
            ("queue:pika-consumer",) * four, {"prefill_rate": 30_000}),
    ]  # fmt: skip


def _request_rows() -> list[Row]:
    w = "request"
    return [
        Row(w, "herald", "herald", "Herald: await request() -> handler returning the reply",
            ("request:herald-async", "request:herald-handler"), {"concurrency": 1}),
        Row(w, "redis-py", "redis-py",
            "redis-py sync: publish + get_message() until the reply (hand-written pattern)",
            ("request:redispy-sync", "request:redispy-sync-responder"), {"concurrency": 1}),
        Row(w, "nats", "nats", "nats-py: await request() -> msg.respond()",
            ("queue:nats-requester", "queue:nats-responder")),
        Row(w, "rabbitmq", "rabbitmq",
            "aio-pika: reply_to + correlation_id (the RPC tutorial's pattern)",
            ("queue:pika-requester", "queue:pika-responder")),
    ]  # fmt: skip


LATENCY_OF = {  # latency row -> the live row whose workers it uses
    "herald": "herald",
    "herald-compiled": "herald-compiled",
    "redis-py-asyncio": "redis-py-asyncio-pipe",
    "faststream": "faststream",
    "broadcaster-fixed": "broadcaster-fixed",
    "nats": "nats",
    "rabbitmq": "rabbitmq",
    "raw": "raw",
}

NOT_MEASURED = [
    ("request", "faststream", "not measured: FastStream has broker.request(), not wired in yet"),
    ("request", "broadcaster", "broadcaster has no request/reply"),
    ("durable-publish", "faststream", "not measured (its stream consumer is)"),
    ("durable-publish", "broadcaster", "broadcaster has no durable delivery"),
    ("durable-consume", "broadcaster", "broadcaster has no durable delivery"),
]
