"""``herald monitor``: every active topic on the server, live in the terminal (or once, as
JSON), and the opt-in command tap (``--tap``: ``MONITOR`` on a connection of its own).

What the server can tell, and so what is shown:

- a topic with subscribers, declared or not: ``PUBSUB CHANNELS``/``NUMSUB`` (and
  ``SHARDCHANNELS``/``SHARDNUMSUB``), asked of every primary of a cluster;
- durable topics: their stream (entries ever added, length), groups (consumers, pending,
  lag) and dead letters; recoverable topics: their last offset. Two readings ``--interval``
  apart give their message rate;
- live topics: the server keeps no count of a channel's messages, so their rate is unknown
  unless ``--live-rates`` counts the publishes it sees through ``MONITOR``; the server-wide
  rate of ``PUBLISH``/``SPUBLISH`` commands (``INFO commandstats``) is shown instead.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

import herald
from herald._io import tap as _tap
from herald._pubsub import channels as _channels
from herald.cli.tap import count_publishes, link_of, open_taps, run_tap

from .common import URL, print_json, stop_on_signals

_SNAPSHOT_TOPICS = 64  # topic_info calls in flight at once
_COST = (
    "MONITOR makes the server format and send every command it runs to this connection: "
    "expect a large drop in throughput on a busy server (Redis documents more than half). "
    "For debugging, not for production monitoring."
)


@dataclass
class Snapshot:
    """One reading of the server: Pub/Sub state, declared topics, counters."""

    time: float
    state: _channels.PubSubState
    policies: dict[str, herald.TopicPolicy]
    infos: dict[str, herald.TopicInfo]
    publish_commands: int
    live_counts: Counter[str] = field(default_factory=Counter)


async def _publish_commands(hub: herald.AsyncClient) -> int:
    """``PUBLISH`` and ``SPUBLISH`` calls the server(s) ran since they started."""
    replies = await _channels.on_every_node(await link_of(hub), "INFO", "commandstats")
    total = 0
    for reply in replies.values():
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        for line in text.splitlines():
            if line.startswith(("cmdstat_publish:", "cmdstat_spublish:")):
                stats = dict(p.split("=", 1) for p in line.split(":", 1)[1].split(","))
                total += int(stats.get("calls", 0))
    return total


async def snapshot(hub: herald.AsyncClient, pattern: str) -> Snapshot:
    """Read everything ``herald monitor`` shows, once."""
    state = await _channels.pubsub_state(await link_of(hub), pattern)
    policies = {t: p for t, p in (await hub.topics()).items() if herald.match(pattern, t)}
    stored = [t for t, p in policies.items() if p.durable or p.history]
    limit = asyncio.Semaphore(_SNAPSHOT_TOPICS)

    async def info(topic: str) -> herald.TopicInfo:
        async with limit:
            return await hub.topic_info(topic)

    infos = dict(zip(stored, await asyncio.gather(*(info(t) for t in stored)), strict=True))
    return Snapshot(time.time(), state, policies, infos, await _publish_commands(hub))


def _kind(policy: herald.TopicPolicy | None) -> str:
    if policy is not None and policy.durable:
        return "durable"
    if policy is not None and policy.history:
        return "recoverable"
    return "live"


def report(
    now: Snapshot, before: Snapshot | None, *, internal: bool = False, live_rates: bool = False
) -> dict[str, Any]:
    """The JSON document of ``herald monitor --once --json`` (the live view shows the same)."""
    dt = now.time - before.time if before is not None else 0.0
    subscribers = now.state.subscribers()
    names = set(now.policies) | set(subscribers)
    if not internal:
        names = {n for n in names if not n.startswith(_channels.INTERNAL_PREFIX)}
    topics: list[dict[str, Any]] = []
    for name in sorted(names):
        policy = now.policies.get(name)
        row: dict[str, Any] = {
            "topic": name,
            "kind": _kind(policy),
            "declared": policy is not None,
            "subscribers": subscribers.get(name, 0),
            "published": None,
            "rate": None,
        }
        if now.state.cluster:
            row["shard_subscribers"] = now.state.shard_channels.get(name, 0)
        info = now.infos.get(name)
        if info is not None:
            row["published"] = info.published
            old = before.infos.get(name) if before is not None else None
            if dt > 0 and old is not None and None not in (info.published, old.published):
                assert info.published is not None
                assert old.published is not None
                row["rate"] = round(max(0, info.published - old.published) / dt, 2)
            if info.policy is not None and info.policy.durable:
                row.update(
                    length=info.length,
                    pending=info.pending,
                    dead_letters=info.dead_letters,
                    groups=[
                        {
                            "name": g.name,
                            "consumers": len(g.consumers),
                            "pending": g.pending,
                            "lag": g.lag,
                            "last_delivered": g.last_delivered,
                        }
                        for g in info.groups
                    ],
                )
        elif live_rates and dt > 0:
            row["rate"] = round(now.live_counts.get(name, 0) / dt, 2)
        topics.append(row)
    publish_rate = None
    if before is not None and dt > 0:
        publish_rate = round(max(0, now.publish_commands - before.publish_commands) / dt, 2)
    return {
        "time": now.time,
        "interval": round(dt, 3) if before is not None else None,
        "server": {
            "nodes": list(now.state.nodes),
            "cluster": now.state.cluster,
            "patterns": now.state.patterns,
            "publish_commands": now.publish_commands,
            "publish_rate": publish_rate,
        },
        "live_rates": live_rates,
        "topics": topics,
    }


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def render(doc: dict[str, Any]) -> Group:
    """The live view of one :func:`report`."""
    server = doc["server"]
    nodes = server["nodes"]
    where = f"cluster of {len(nodes)} primaries" if server["cluster"] else ", ".join(nodes)
    rate = server["publish_rate"]
    head = Text.assemble(
        ("herald monitor", "bold"),
        f"  {where}  ·  {len(doc['topics'])} topics  ·  {server['patterns']} patterns  ·  ",
        "PUBLISH commands/s: ",
        ("-" if rate is None else f"{rate:,.1f}", "bold"),
        "  ·  ",
        (time.strftime("%H:%M:%S", time.localtime(doc["time"])), "dim"),
    )
    table = Table(box=None, header_style="bold", expand=False)
    table.add_column("topic", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("subscribers", justify="right")
    if server["cluster"]:
        table.add_column("sharded", justify="right")
    for name in ("msg/s", "entries", "pending", "lag", "dead"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in doc["topics"]:
        kind = row["kind"] if row["declared"] else "live (undeclared)"
        rate = "?" if row["rate"] is None else f"{row['rate']:,.1f}"
        groups = row.get("groups", [])
        lags = [g["lag"] for g in groups]
        lag = "-" if not groups else ("?" if None in lags else f"{sum(lags):,}")
        cells = [Text(row["topic"]), Text(kind, style="" if row["declared"] else "yellow")]
        cells.append(Text(str(row["subscribers"])))
        if server["cluster"]:
            cells.append(Text(str(row.get("shard_subscribers", 0))))
        for value in (rate, _count(row.get("length")), _count(row.get("pending")), lag):
            cells.append(Text(value))
        cells.append(
            Text(_count(row.get("dead_letters")), style="red" if row.get("dead_letters") else "")
        )
        table.add_row(*cells)
        for g in groups:
            glag = "?" if g["lag"] is None else f"{g['lag']:,}"
            extra = [""] if server["cluster"] else []
            table.add_row(
                Text(f"  group {g['name']}", style="dim"),
                Text(f"consumers: {g['consumers']}", style="dim"),
                "",
                *extra,
                "",
                "",
                Text(f"{g['pending']:,}", style="dim"),
                Text(glag, style="dim"),
                "",
            )
    notes = []
    if not doc["live_rates"] and any(r["kind"] == "live" for r in doc["topics"]):
        notes.append(
            "msg/s of live topics: ? (the server keeps no count per channel; "
            "--live-rates counts them through MONITOR, at a cost)"
        )
    if not doc["topics"]:
        notes.append("no topic has subscribers and none is declared")
    return Group(head, table, *(Text(n, style="dim") for n in notes))


async def run_view(
    url: str | None,
    pattern: str,
    interval: float,
    once: bool,
    as_json: bool,
    internal: bool,
    live_rates: bool,
) -> None:
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)
    async with herald.AsyncClient(url, start_embedded=False) as hub:
        counts: Counter[str] = Counter()
        taps: list[_tap.Tap] = []
        counter: asyncio.Task[None] | None = None
        if live_rates:
            taps = await open_taps(hub)
            counter = asyncio.get_running_loop().create_task(count_publishes(taps, counts))

        async def reading() -> Snapshot:
            if counter is not None and counter.done():
                counter.result()  # the MONITOR connection's error
            now = await snapshot(hub, pattern)
            now.live_counts = Counter(counts)
            counts.clear()
            return now

        def doc(now: Snapshot, before: Snapshot | None) -> dict[str, Any]:
            return report(now, before, internal=internal, live_rates=live_rates)

        try:
            before = await reading()
            if once:
                await asyncio.sleep(interval)
                result = doc(await reading(), before)
                if as_json:
                    print_json(result)
                else:
                    console.print(render(result))
                return
            with Live(render(doc(before, None)), console=console, auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    now = await reading()
                    live.update(render(doc(now, before)), refresh=True)
                    before = now
        finally:
            if counter is not None:
                counter.cancel()
            for t in taps:
                await t.close()


@click.command(short_help="Active topics live: subscribers, rates, groups, lag; --tap.")
@click.argument("pattern", default="*")
@click.option("--once", is_flag=True, help="Print one reading (two, --interval apart) and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: the reading as JSON.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between readings (rates are measured over it).",
)
@click.option(
    "--all",
    "internal",
    is_flag=True,
    help="Show Herald's own channels (_herald.*) too; --tap: also every client's read of the "
    "policy version (once a second).",
)
@click.option(
    "--live-rates",
    is_flag=True,
    help="Count live topics' messages through MONITOR on a connection of its own (costly: "
    "see --tap).",
)
@click.option(
    "--tap",
    is_flag=True,
    help="Print the commands that concern Herald's topics and keys as the server runs them "
    "(MONITOR on a connection of its own; slows the server down: for debugging).",
)
@click.option(
    "--count", "-n", type=click.IntRange(min=1), default=None, help="--tap: exit after N."
)
@click.option("--timeout", "-t", type=float, default=None, help="--tap: exit after S seconds.")
@URL
def monitor(
    pattern: str,
    once: bool,
    as_json: bool,
    interval: float,
    internal: bool,
    live_rates: bool,
    tap: bool,
    count: int | None,
    timeout: float | None,
    url: str | None,
) -> None:
    """Every active topic on the server, declared or not, live: subscribers, message rates,
    durable topics' groups, pending, lag and dead letters.

    PATTERN (a glob, default *) picks the topics. On a cluster every primary is asked. Live
    topics' rates are unknown to the server (it keeps no count per channel): --live-rates
    counts them through MONITOR. --tap prints the commands themselves.
    """
    if as_json and not (once or tap):
        raise click.UsageError("--json needs --once (or --tap)")
    if tap and (once or live_rates):
        raise click.UsageError(
            "--tap prints commands; it does not combine with --once or --live-rates"
        )
    if not tap and (count is not None or timeout is not None):
        raise click.UsageError("--count and --timeout apply to --tap")
    if tap or live_rates:
        click.echo(f"warning: {_COST}", err=True)
    stop_on_signals()
    try:
        if tap:
            glob = None if pattern == "*" else pattern
            sys.exit(asyncio.run(run_tap(url, glob, as_json, count, timeout, polls=internal)))
        asyncio.run(run_view(url, pattern, interval, once, as_json, internal, live_rates))
    except herald.HeraldError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130 if tap else 0)
