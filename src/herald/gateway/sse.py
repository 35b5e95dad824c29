"""Server-sent events: ``GET /topics/{topic}/events``, resumable with ``Last-Event-ID``.

Every event is an unnamed SSE event whose data is one JSON frame (``type`` says which: message,
gap, history_lost, closed). Messages of recoverable topics carry their offset as the event id, so
a browser's ``EventSource`` resumes after a reconnect with no gap and no duplicate, or gets a
``history_lost`` frame when the history no longer reaches back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from herald import Subscription

from .fanout import RESUME_SUPPORTED, Sink
from .frames import event_frame
from .http import _authorized, error, parse_offset
from .state import Gateway, recoverable
from .uvicorn_http import ABORT


async def events(request: Request) -> Response:
    topic = request.path_params["topic"]
    gw, principal = _authorized(request, "subscribe", topic)
    await gw.hub.subscribe(topic).close()  # validates the name; nothing is sent
    params = request.query_params
    policy = (await gw.policies()).get(topic)
    since = last = None
    resuming_live = False
    # Resuming reads the topic's history: the history grant is needed for that too.
    may_read_history = principal.may("history", topic)
    if (params.get("since") or params.get("last")) and not may_read_history:
        return error(403, "forbidden", f"no history grant for {topic!r} (since/last)")
    if recoverable(policy):
        since = parse_offset(params.get("since"), "since")
        last = parse_offset(params.get("last"), "last")
        if last is not None and last > gw.config.history_limit:
            raise ValueError(f"last must be at most {gw.config.history_limit}")
        resumed = request.headers.get("last-event-id", "")
        if since is None and last is None and resumed:
            # EventSource sends back whatever id it saw last; one that is not an offset (the
            # topic was live then) cannot be resumed from: say so instead of refusing, since a
            # refused EventSource stops reconnecting. Without the history grant it goes on
            # live, with a gap frame, for the same reason.
            if resumed.isdigit() and len(resumed) <= 19 and may_read_history:
                since = parse_offset(resumed, "Last-Event-ID")
            else:
                resuming_live = True
    elif params.get("since") or params.get("last"):
        return error(
            409,
            "not_applicable",
            f"topic {topic!r} is not recoverable (it keeps no history): since/last cannot "
            "resume it",
        )
    elif request.headers.get("last-event-id"):
        resuming_live = True
    if (since is not None or last is not None) and not RESUME_SUPPORTED:
        return error(501, "not_supported", "this Herald has no recoverable topics")
    expires = principal.expires
    if expires is not None and gw.config.auth is not None:
        expires += gw.config.auth.leeway
    # A client cut as too slow has stopped reading: its connection is aborted (a close would
    # wait for it to read what is buffered) and the stream is unregistered.
    abort = request.scope.get("extensions", {}).get(ABORT)
    return StreamingResponse(
        _stream(gw, topic, since, last, resuming_live, expires, abort),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _stream(
    gw: Gateway,
    topic: str,
    since: int | None,
    last: int | None,
    resuming_live: bool,
    expires: float | None = None,
    abort: Callable[[], None] | None = None,
) -> AsyncIterator[str]:
    sink = Sink(gw.stats, gw.config.max_queue, gw.config.max_queue_bytes, on_cut=abort)
    own: Subscription | None = None
    gw.stats.sse_clients += 1
    try:
        if since is not None or last is not None:
            own = await gw.fanout.resume(topic, sink, since=since, last=last)
        else:
            await gw.fanout.add(topic, sink)
        yield "retry: 2000\n\n"
        if resuming_live:
            yield (
                "data: "
                + event_frame(
                    "gap",
                    subscription=topic,
                    reason="live topic: messages sent while disconnected are not kept",
                )
                + "\n\n"
            )
        heartbeat = gw.config.sse_heartbeat
        while True:
            wait = heartbeat
            if expires is not None:
                left = expires - time.time()
                if left <= 0:
                    # The stream ends with its token: EventSource reconnects with the same
                    # (expired) token, is refused with 401, and stops.
                    sink.close(1008, "token expired")
                    break
                wait = min(wait, left)
            try:
                items, _ = await asyncio.wait_for(sink.take(), wait)
            except TimeoutError:
                if expires is None or time.time() < expires:
                    yield ": keepalive\n\n"
                continue
            if not items:
                break
            out = []
            for text, eid, _ in items:
                out.append(f"id: {eid}\ndata: {text}\n\n" if eid else f"data: {text}\n\n")
            yield "".join(out)
        if sink.reason:
            yield "data: " + event_frame("closed", reason=sink.reason) + "\n\n"
    finally:
        gw.stats.sse_clients -= 1
        sink.close()
        if own is not None:
            await gw.fanout.release(own)
        else:
            await gw.fanout.remove(topic, sink)
