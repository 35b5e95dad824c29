"""Scoreboard: a feed of posts counted into sorted sets, the top 10 served over HTTP.

    python examples/scoreboard/main.py                 # embedded Valkey, http://127.0.0.1:8000
    python examples/scoreboard/main.py --url redis://localhost:6379 --port 8080
    curl http://127.0.0.1:8000/top/hashtags

A publisher reads ``feed.jsonl`` (a generated sample; ``make_feed.py`` makes it) and publishes
each post's author on the channel ``usernames`` and each of its hashtags on ``hashtags``. Two
counters subscribe to those channels and count into the sorted sets ``<board>:usernames`` and
``<board>:hashtags`` (ZINCRBY). Once everything is counted the top 10 of each is printed (as
JSON), and a small Starlette app serves them: ``GET /top/usernames``, ``GET /top/hashtags``
(``?n=`` for another length) and ``GET /`` with both. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import herald

FEED = Path(__file__).with_name("feed.jsonl")
BOARDS = ("usernames", "hashtags")


def read_feed(path: Path = FEED) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def expected_counts(posts: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """What the sorted sets must hold once the feed is counted (used to know when it is)."""
    return {
        "usernames": Counter(p["author"] for p in posts),
        "hashtags": Counter(t for p in posts for t in p["hashtags"]),
    }


async def top(hub: herald.AsyncClient, board: str, name: str, n: int = 10) -> list[list[Any]]:
    """The ``n`` highest counts of one sorted set, as ``[member, count]`` pairs."""
    reply = await hub.execute("ZRANGE", f"{board}:{name}", 0, n - 1, "REV", "WITHSCORES")
    pairs = [reply[i : i + 2] for i in range(0, len(reply), 2)]
    return [[bytes(m).decode(), int(float(s))] for m, s in pairs]


async def count_feed(hub: herald.AsyncClient, board: str, posts: list[dict[str, Any]]) -> None:
    """Subscribe the counters, publish the feed, and return once every item is counted."""
    want = expected_counts(posts)
    total = sum(sum(c.values()) for c in want.values())
    counted = 0
    done = asyncio.Event()
    await hub.execute("DEL", *(f"{board}:{name}" for name in BOARDS))

    def counter(name: str) -> Any:
        key = f"{board}:{name}"

        async def count(msg: herald.Message) -> None:
            nonlocal counted
            await hub.execute("ZINCRBY", key, 1, msg.data)
            counted += 1
            if counted == total:
                done.set()

        return count

    subs = [await hub.subscribe(name, handler=counter(name)) for name in BOARDS]
    async with herald.AsyncClient(hub.url) as publisher:  # another service, in real life
        for post in posts:
            await publisher.publish("usernames", post["author"])
            for tag in post["hashtags"]:
                await publisher.publish("hashtags", tag)
    await asyncio.wait_for(done.wait(), 60)
    for sub in subs:
        await sub.close()


def make_app(url: str, board: str) -> Any:
    """The HTTP API: a Starlette app with its own client (opened and closed with the app)."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    hub = herald.AsyncClient(url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        async with hub:
            yield

    async def top_of(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name not in BOARDS:
            return JSONResponse({"error": f"no board {name!r}; try {list(BOARDS)}"}, 404)
        n = int(request.query_params.get("n", 10))
        return JSONResponse({name: await top(hub, board, name, n)})

    async def both(request: Request) -> JSONResponse:
        return JSONResponse({name: await top(hub, board, name) for name in BOARDS})

    return Starlette(
        routes=[Route("/", both), Route("/top/{name}", top_of)],
        lifespan=lifespan,
    )


async def run(url: str, board: str, port: int | None) -> None:
    posts = read_feed()
    async with herald.AsyncClient(url) as hub:
        await count_feed(hub, board, posts)
        summary = {name: await top(hub, board, name) for name in BOARDS}
    print(json.dumps({"posts": len(posts), **summary}), flush=True)
    if port is None:
        return
    import uvicorn

    config = uvicorn.Config(make_app(url, board), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    print(f"serving http://127.0.0.1:{port}/top/hashtags (Ctrl-C stops)", flush=True)
    await server.serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="Redis/Valkey URL (default: an embedded Valkey)")
    parser.add_argument("--board", default="scoreboard", help="prefix of the sorted sets' keys")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (0: do not serve)")
    args = parser.parse_args()
    port = args.port or None
    try:
        if args.url is None:
            with herald.EmbeddedServer(persist=False) as server:
                asyncio.run(run(server.url, args.board, port))
        else:
            asyncio.run(run(args.url, args.board, port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
