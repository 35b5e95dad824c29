"""Scoreboard: a feed of posts counted into sorted sets, the top 10 served over HTTP.

    python examples/scoreboard/main.py                 # embedded Valkey, http://127.0.0.1:8000
    python examples/scoreboard/main.py --url redis://localhost:6379 --port 8080
    curl http://127.0.0.1:8000/top/hashtags

A publisher reads ``feed.jsonl`` (a generated sample; ``make_feed.py`` makes it) and publishes
each post as plain JSON on the channel ``posts``, without Herald's envelope, as any Redis client
would (``r.publish("posts", json.dumps(post))``). A :class:`herald.Router` routes the posts by
content: those with hashtags to ``posts.tagged``, the others to ``posts.untagged``. Two counters
count into the sorted sets ``<board>:usernames`` (every post's author: the pattern ``posts.*``)
and ``<board>:hashtags`` (each hashtag of ``posts.tagged``) with ZINCRBY. Once everything is
counted the top 10 of each is printed (as JSON), and a small Starlette app serves them:
``GET /top/usernames``, ``GET /top/hashtags`` (``?n=`` for another length) and ``GET /`` with
both. Ctrl-C stops it.
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
    """Route and count the feed, and return once every author and hashtag is counted."""
    want = expected_counts(posts)
    total = sum(sum(c.values()) for c in want.values())
    counted = 0
    done = asyncio.Event()
    await hub.execute("DEL", *(f"{board}:{name}" for name in BOARDS))

    async def count(key: str, items: list[str]) -> None:
        nonlocal counted
        for item in items:
            await hub.execute("ZINCRBY", key, 1, item)
        counted += len(items)
        if counted == total:
            done.set()

    async def count_author(msg: herald.Message) -> None:
        await count(f"{board}:usernames", [msg.data["author"]])

    async def count_hashtags(msg: herald.Message) -> None:
        await count(f"{board}:hashtags", msg.data["hashtags"])

    subs = [
        await hub.subscribe("posts.*", handler=count_author),
        await hub.subscribe("posts.tagged", handler=count_hashtags),
    ]
    router = herald.Router(hub, "posts")  # reads the plain JSON (foreign="json")
    router.route("hashtags.0 exists", to="posts.tagged")
    router.default("posts.untagged")
    async with router, herald.AsyncClient(hub.url, envelope=False) as publisher:
        for post in posts:  # another service, in real life: any Redis client
            await publisher.publish("posts", post)
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
