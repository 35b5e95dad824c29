"""``herald monitor --tap``: the commands that concern Herald, printed as each node runs them
(``MONITOR`` on connections of the tap's own, :mod:`herald._io.tap`), and ``--live-rates``'
count of live topics' messages from the same feed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any

import click
from rich.console import Console

import herald
from herald._core import wire as _wire
from herald._io import tap as _tap
from herald._io.interface import Connection
from herald._pubsub import channels as _channels

from .common import shown


async def link_of(hub: herald.AsyncClient) -> Connection:
    """The client's command connection: per-node commands (each primary of a cluster) need
    it, where the public ``execute`` routes a command by its key."""
    await hub.connect()
    link = hub._link
    assert link is not None
    return link


def messages_in(line: _tap.TapLine) -> int:
    """Messages a ``PUBLISH``/``SPUBLISH`` carries: a Herald batch frame holds many."""
    if len(line.args) < 3 or line.command not in ("PUBLISH", "SPUBLISH"):
        return 0
    payload = line.args[2]
    if not payload.startswith(_wire.MAGIC):
        return 1
    try:
        return len(_wire.decode(line.args[1].decode(errors="replace"), payload))
    except herald.HeraldError:
        return 1


async def open_taps(hub: herald.AsyncClient) -> list[_tap.Tap]:
    nodes = _channels.cluster_nodes(await link_of(hub))
    assert hub.endpoint is not None
    taps = [_tap.Tap(ep) for ep in await _tap.tap_endpoints(hub.endpoint, nodes)]
    try:
        for t in taps:
            await t.open()
    except BaseException:
        for t in taps:
            await t.close()
        raise
    return taps


class _Feed:
    """Reads every tap without ever waiting for the printer: a MONITOR connection that is not
    read makes the server buffer its output without limit (a monitor is a "normal" client,
    whose output buffer has no limit by default). Lines the printer cannot keep up with are
    dropped and counted."""

    def __init__(self, glob: str | None, polls: bool) -> None:
        self.glob = glob
        self.polls = polls
        self.queue: asyncio.Queue[_tap.TapLine] = asyncio.Queue(maxsize=10_000)
        self.dropped = 0

    async def run(self, taps: list[_tap.Tap]) -> None:
        await asyncio.gather(*(self._one(t) for t in taps))

    async def _one(self, t: _tap.Tap) -> None:
        async for line in t.lines():
            if not _tap.wanted(line, self.glob, polls=self.polls):
                continue
            try:
                self.queue.put_nowait(line)
            except asyncio.QueueFull:
                self.dropped += 1


def _describe_line(line: _tap.TapLine) -> str:
    name = line.command
    args = line.args[1:]
    if name in ("PUBLISH", "SPUBLISH") and len(args) == 2:
        n = messages_in(line)
        payload = args[1]
        if payload.startswith(_wire.MAGIC):
            try:
                msgs = _wire.decode(args[0].decode(errors="replace"), payload)
                first = msgs[0].data if msgs else b""
            except herald.HeraldError as exc:
                return f"{_text(args[0])}  (undecodable frame: {exc})"
            preview = _preview(first)
            many = f"  [{n} messages]" if n > 1 else ""
            return f"{_text(args[0])}  {preview}{many}"
        return f"{_text(args[0])}  {_preview(payload)}  (foreign payload)"
    return " ".join(_preview(a, 80) for a in args)


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace")


def _preview(data: Any, limit: int = 120) -> str:
    if isinstance(data, bytes):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = "b64:" + base64.b64encode(data).decode()
    elif isinstance(data, str):
        text = data
    else:
        text = json.dumps(data, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line_json(line: _tap.TapLine) -> str:
    args: list[Any] = []
    for a in line.args:
        try:
            args.append(a.decode())
        except UnicodeDecodeError:
            args.append({"base64": base64.b64encode(a).decode()})
    record: dict[str, Any] = {
        "time": line.time,
        "node": line.node,
        "db": line.db,
        "client": line.client,
        "command": line.command,
        "topics": line.topics(),
        "args": args[1:],
    }
    if line.command in ("PUBLISH", "SPUBLISH"):
        record["messages"] = messages_in(line)
    return json.dumps(record)


async def run_tap(
    url: str | None,
    glob: str | None,
    as_json: bool,
    count: int | None,
    timeout: float | None,
    polls: bool = False,
) -> int:
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)
    async with herald.AsyncClient(url, start_embedded=False) as hub:
        taps = await open_taps(hub)
        feed = _Feed(glob, polls)
        queue = feed.queue
        feeder = asyncio.get_running_loop().create_task(feed.run(taps))
        shown_lines = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if not as_json:
                where = ", ".join(t.node for t in taps)
                click.echo(f"tapping {where} (Ctrl-C to stop)", err=True)
            while count is None or shown_lines < count:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {get, feeder}, timeout=remaining, return_when="FIRST_COMPLETED"
                )
                if get not in done:
                    get.cancel()
                    if feeder in done:
                        feeder.result()  # the connection's error
                        return 1
                    continue
                line = get.result()
                shown_lines += 1
                if as_json:
                    sys.stdout.write(_line_json(line) + "\n")
                    sys.stdout.flush()
                    continue
                stamp = time.strftime("%H:%M:%S", time.localtime(line.time))
                node = f" {line.node}" if len(taps) > 1 else ""
                console.print(
                    f"[dim]{stamp}.{int(line.time * 1000) % 1000:03d}{node} "
                    f"{shown(line.client)}[/] [bold cyan]{line.command}[/] "
                    f"{shown(_describe_line(line))}",
                    soft_wrap=True,
                )
        finally:
            feeder.cancel()
            for t in taps:
                await t.close()
            with contextlib.suppress(asyncio.CancelledError, herald.HeraldError, OSError):
                await feeder
            if feed.dropped:
                click.echo(
                    f"{feed.dropped} command(s) not shown: printing could not keep up", err=True
                )
    return 0


async def count_publishes(taps: list[_tap.Tap], counts: Counter[str]) -> None:
    async def one(t: _tap.Tap) -> None:
        async for line in t.lines():
            if line.command in ("PUBLISH", "SPUBLISH") and len(line.args) >= 3:
                counts[_text(line.args[1])] += messages_in(line)

    await asyncio.gather(*(one(t) for t in taps))
