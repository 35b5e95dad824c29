"""Publisher alone: client CPU per message for publish() and publish_many().

    python bench/publisher.py [--messages 300000] [--runs 3] [--only publish|publish_many]

One process publishes 100-byte JSON dicts fire-and-forget to a fresh embedded Valkey (no
subscriber) and reports the best of ``--runs`` runs in messages/s, flush included.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import herald


async def measure(
    messages: int, runs: int, only: tuple[str, ...] = ("publish", "publish_many")
) -> dict[str, float]:
    payload = {"sym": "ACME", "px": 1.2345, "n": 1, "pad": "x" * 52}
    best: dict[str, float] = {}
    with herald.EmbeddedServer(persist=False) as server:
        async with herald.AsyncClient(server.url) as hub:
            await hub.publish("bench", payload)
            for label in only:
                for _ in range(runs):
                    start = time.perf_counter()
                    if label == "publish":
                        for _ in range(messages):
                            await hub.publish("bench", payload)
                    else:
                        chunk = [payload] * 1000
                        for _ in range(messages // 1000):
                            await hub.publish_many("bench", chunk)
                    await hub.flush()
                    rate = messages / (time.perf_counter() - start)
                    best[label] = max(best.get(label, 0.0), rate)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("publish", "publish_many"), help="one of the two")
    args = parser.parse_args()
    only = (args.only,) if args.only else ("publish", "publish_many")
    for label, rate in asyncio.run(measure(args.messages, args.runs, only)).items():
        print(f"{label:14} {rate / 1000:8.1f}k msg/s")


if __name__ == "__main__":
    main()
