"""Subscriber alone: client CPU per message on the receive path, fed from memory.

    python bench/receive.py [--messages 200000] [--runs 5] [--batch 1000] [--iterate]
    python bench/receive.py --profile        # cProfile of one run, top functions

A real AsyncClient subscribes on a fresh embedded Valkey; the benchmark then hands its
subscriber connection's protocol the bytes the server would send (RESP pushes of 100-byte JSON
dicts in Herald's envelope, one per PUBLISH or in batch frames of ``--batch``), so what is
timed is hiredis parsing -> decode -> subscription -> a handler that reads ``msg.data``, with
no socket and no publisher sharing the CPU. Reports the best of ``--runs`` in ns per message.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import herald
from herald._core import wire as _wire


def _push(channel: bytes, payload: bytes) -> bytes:
    parts = (b"message", channel, payload)
    out = [b"*3\r\n"]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def chunks(messages: int, batch: int) -> tuple[list[bytes], int]:
    """The socket reads that carry ``messages``: whole frames, up to 64 KiB each (a read that
    ends inside a frame would let a reply on the real socket, a probe's, land in the middle)."""
    enc = _wire.Encoder()
    payload = {"sym": "ACME", "px": 1.2345, "n": 1, "pad": "x" * 52}
    envs = [enc.envelope(payload) for _ in range(min(batch, messages))]
    frame = _push(b"bench", envs[0] if batch == 1 else _wire.batch(envs))
    per_read = max(1, 65536 // len(frame))
    reads = max(1, messages // len(envs) // per_read)
    return [frame * per_read] * reads, reads * per_read * len(envs)


async def measure(messages: int, runs: int, batch: int, iterate: bool, profile: bool) -> float:
    data, messages = chunks(messages, batch)
    best = float("inf")
    with herald.EmbeddedServer(persist=False) as server:
        async with herald.AsyncClient(server.url) as hub:
            n = 0

            def handler(msg: herald.Message) -> None:
                nonlocal n
                if msg.data.__class__ is dict:
                    n += 1

            if iterate:
                sub = await hub.subscribe("bench")
            else:
                sub = await hub.subscribe("bench", handler=handler)
            await asyncio.sleep(0.05)  # the handler task parks
            proto: Any = hub._subscriber.link._proto  # type: ignore[union-attr]
            feed = proto.data_received
            for _ in range(runs):
                n = 0
                start = time.perf_counter_ns()
                if profile:
                    import cProfile
                    import pstats

                    pr = cProfile.Profile()
                    pr.enable()
                for chunk in data:
                    feed(chunk)
                    if iterate:
                        while sub.pending:
                            handler(await sub.__anext__())
                    else:
                        await asyncio.sleep(0)
                while n < messages:
                    if iterate:
                        handler(await sub.__anext__())
                    else:
                        await asyncio.sleep(0)
                if profile:
                    pr.disable()
                    pstats.Stats(pr).sort_stats("tottime").print_stats(15)
                    return 0.0
                best = min(best, (time.perf_counter_ns() - start) / messages)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000, help="messages per frame (1: no batch)")
    parser.add_argument("--iterate", action="store_true", help="async for instead of a handler")
    parser.add_argument("--profile", action="store_true", help="cProfile one run")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    run = measure(args.messages, args.runs, args.batch, args.iterate, args.profile)
    if args.uvloop:
        import uvloop

        ns = uvloop.run(run)
    else:
        ns = asyncio.run(run)
    if not args.profile:
        what = "iterator" if args.iterate else "handler"
        print(f"{what}, batch {args.batch}: {ns:.0f} ns/msg")


if __name__ == "__main__":
    main()
