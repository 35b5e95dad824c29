"""Generate the scoreboard's sample feed, ``feed.jsonl`` (shipped; run again to change it).

    python examples/scoreboard/make_feed.py [--posts 1500] [--seed 42]

One JSON post per line: ``{"id": 1, "author": "ada", "text": "...", "hashtags": ["python"]}``.
Authors and hashtags are drawn with a skewed (Zipf-like) popularity, as on a real feed, so
the top 10 is clear but not trivial.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

AUTHORS = [
    "ada", "grace", "linus", "guido", "barbara", "ken", "dennis", "margaret", "alan", "edsger",
    "donald", "frances", "john", "radia", "tim", "vint", "leslie", "niklaus", "bjarne", "james",
    "yukihiro", "anders", "brendan", "rob", "larry", "sophie", "hedy", "katherine", "annie",
    "jean", "adele", "mary", "carol", "fran", "shafi", "sally", "lynn", "ruth", "betty", "kay",
]  # fmt: skip
HASHTAGS = [
    "python", "redis", "valkey", "asyncio", "pubsub", "streams", "rust", "linux", "databases",
    "opensource", "devops", "kubernetes", "testing", "performance", "latency", "websockets",
    "starlette", "typing", "msgspec", "hiredis", "benchmarks", "cloud", "security", "ml",
]  # fmt: skip
WORDS = [
    "fast",
    "message",
    "topic",
    "queue",
    "server",
    "client",
    "ship",
    "deploy",
    "measure",
    "read",
    "write",
    "merge",
]


def skewed(rnd: random.Random, items: list[str]) -> str:
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(items))]
    return rnd.choices(items, weights)[0]


def make(posts: int, seed: int) -> list[dict[str, object]]:
    rnd = random.Random(seed)
    out: list[dict[str, object]] = []
    for i in range(1, posts + 1):
        tags = sorted({skewed(rnd, HASHTAGS) for _ in range(rnd.randint(0, 3))})
        words = " ".join(rnd.choices(WORDS, k=rnd.randint(4, 9)))
        text = words + "".join(f" #{t}" for t in tags)
        out.append({"id": i, "author": skewed(rnd, AUTHORS), "text": text, "hashtags": tags})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--posts", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default=str(Path(__file__).with_name("feed.jsonl")))
    args = parser.parse_args()
    with open(args.output, "w") as f:
        for post in make(args.posts, args.seed):
            f.write(json.dumps(post) + "\n")


if __name__ == "__main__":
    main()
