"""``herald consume``: read a durable topic as a member of a consumer group, print each message
and settle it (ack, or nak with ``--nak``). Built on the public API (``AsyncClient.consume``)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from typing import Any

import click
from rich.console import Console

import herald

from .common import COUNT, JSON_LINES, TIMEOUT, URL, data_field, jsonable, print_json, shown, take


def _record(msg: herald.DurableMessage, settled: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "topic": msg.topic,
        "offset": msg.offset,
        "deliveries": msg.deliveries,
        "key": msg.key,
        "id": msg.id,
        "timestamp": msg.timestamp,
        "headers": msg.headers,
        "settled": settled,
    }
    field, value = data_field(msg.data)  # a plain program's entry: a dict of bytes
    record[field] = value
    return record


def _line(msg: herald.DurableMessage, settled: str) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(msg.timestamp or time.time()))
    data = msg.data
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            data = "(base64) " + base64.b64encode(data).decode()
    text = data if isinstance(data, str) else json.dumps(jsonable(data), default=repr)
    key = f" [magenta]{shown(msg.key)}[/]" if msg.key else ""
    again = f" [yellow](delivery {msg.deliveries})[/]" if msg.deliveries > 1 else ""
    extra = f" [dim]{shown(str(msg.headers))}[/]" if msg.headers else ""
    return (
        f"[dim]{stamp} {msg.offset}[/] [bold cyan]{shown(msg.topic)}[/]{key} {shown(text)}"
        f"{extra}{again} [dim]{settled}[/]"
    )


@click.command(short_help="Read a durable topic in a group: print, then ack (or nak).")
@click.argument("topic")
@click.option("--group", "-g", required=True, help="The consumer group (created if new).")
@click.option(
    "--consumer",
    "-c",
    default=None,
    help="This consumer's name in the group (default: <hostname>-<pid>-<n>).",
)
@click.option(
    "--start",
    default="new",
    show_default=True,
    help="Where a NEW group starts: new, all, or after an entry id (an existing group keeps "
    "its position).",
)
@click.option(
    "--nak",
    is_flag=True,
    help="Nak each message instead of acking it: the group gets it again, delivered to any "
    "of its consumers.",
)
@COUNT
@TIMEOUT
@JSON_LINES
@URL
def consume(
    topic: str,
    group: str,
    consumer: str | None,
    start: str,
    nak: bool,
    count: int | None,
    timeout: float | None,
    as_json: bool,
    url: str | None,
) -> None:
    """Print the messages of a durable TOPIC as a consumer of GROUP, and ack each one once
    printed (--nak: nak it).

    Exits with status 1 if --timeout passes before --count messages arrived.
    """
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)
    settled = "nak" if nak else "ack"

    async def handle(msg: herald.DurableMessage) -> None:
        if as_json:
            print_json(_record(msg, settled))
        else:
            console.print(_line(msg, settled), soft_wrap=True)
        # Settled once shown: a message is never acked unseen.
        await (msg.nak() if nak else msg.ack(confirm=True))

    async def run() -> int:
        async with (
            herald.AsyncClient(url, start_embedded=False) as hub,
            hub.consume(
                topic,
                group,
                consumer,
                start=start,
                auto_ack=False,
                # With --count, read no more than that: what is read ahead stays pending with
                # this consumer until it is handed back.
                batch=min(count or 100, 100),
            ) as reader,
        ):
            if not as_json:
                click.echo(f"consuming {topic} as {reader.name} in group {group}", err=True)
            return await take(reader, count, timeout, handle)

    try:
        code = asyncio.run(run())
    except herald.HeraldError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
