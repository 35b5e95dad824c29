"""The ``herald topics``, ``herald dead`` and ``herald replay`` commands (durable topics).

Built on the public API only (``herald.Client``: ``declare``, ``topics``, ``topic_info``,
``delete_topic``, ``dead_letters``, ``replay_dead``, ``replay``); registered by ``cli/__init__.py``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

import herald

from .common import UNSHARDED, URL, data_field, jsonable, print_json, shown

_ID = re.compile(r"\d+(-\d+)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_SEQ = 2**64 - 1
_PREVIEW = 60


def _console() -> Console:
    # Piped or captured output is not cut to 80 columns: tables stay one line per row.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 1000)


@contextmanager
def _client(url: str | None) -> Iterator[herald.Client]:
    try:
        with herald.Client(url, start_embedded=False) as hub:
            yield hub
    except herald.HeraldError as exc:
        raise click.ClickException(str(exc)) from None


class Duration(click.ParamType[float]):
    """Seconds, or a number with a unit: ``90``, ``90s``, ``15m``, ``12h``, ``7d``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        unit = _UNITS.get(text[-1:])
        try:
            seconds = float(text[:-1] if unit else text) * (unit or 1)
        except ValueError:
            self.fail(f"{value!r} is not a duration (e.g. 90, 90s, 15m, 12h, 7d)", param, ctx)
        return seconds


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _describe(policy: herald.TopicPolicy | None) -> str:
    if policy is None:
        return "live (not declared)"
    if policy.history:
        ttl = f", history_ttl={_duration(policy.history_ttl)}" if policy.history_ttl else ""
        return f"recoverable, history={policy.history}{ttl}"
    unsharded = "" if policy.sharded else ", unsharded"
    if not policy.durable:
        return ("bare" if policy.bare else "live") + unsharded
    parts = ["durable"]
    if policy.bare:
        parts.append("bare")
    if not policy.sharded:
        parts.append("unsharded")
    if policy.max_len is not None:
        parts.append(f"max_len={policy.max_len}")
    if policy.max_age is not None:
        parts.append(f"max_age={_duration(policy.max_age)}")
    parts.append(f"dedup={_duration(policy.dedup_window)}" if policy.dedup_window else "no dedup")
    if policy.trim_unacked:
        parts.append("trim_unacked")
    if policy.fsync:
        parts.append("fsync")
    return ", ".join(parts)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds).isoformat(sep=" ", timespec="milliseconds")


def _preview(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(jsonable(data), default=repr)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _position(value: str, *, inclusive: bool) -> str | datetime:
    """An entry id or an ISO 8601 time (naive: local time) from the command line."""
    if _ID.fullmatch(value):
        if not inclusive:
            return value
        # The API reads *after* an id; from the command line an id means *from* it.
        ms, _, seq = value.partition("-")
        if seq and int(seq):
            return f"{ms}-{int(seq) - 1}"
        return f"{int(ms) - 1}-{_MAX_SEQ}" if int(ms) else "0-0"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an entry id (1700000000000-0) nor an ISO time "
            "(2024-05-01T12:00:00, 2024-05-01T12:00:00+02:00)"
        ) from None


# -- herald topics ---------------------------------------------------------------------------


@click.group()
def topics() -> None:
    """Declare, list, show and delete topics."""


@topics.command("declare")
@click.argument("topic")
@click.option("--durable", is_flag=True, help="Store every message in a stream, for groups.")
@click.option("--max-len", type=click.IntRange(min=0), default=None, help="Keep at most N.")
@click.option("--max-age", type=Duration(), default=None, help="Keep none older (90s, 7d).")
@click.option("--dedup-window", type=Duration(), default=120.0, help="For msg_id (default 2m).")
@click.option("--trim-unacked", is_flag=True, help="Let retention remove unacked entries.")
@click.option("--bare", is_flag=True, help="Publish payloads without Herald's envelope.")
@UNSHARDED
@click.option(
    "--history",
    type=click.IntRange(min=0),
    default=0,
    help="Recoverable: keep the last N messages for subscribers that reconnect.",
)
@click.option("--history-ttl", type=Duration(), default=None, help="Drop history idle this long.")
@click.option(
    "--fsync", is_flag=True, help="Durable: acknowledge a publish only once on disk (WAITAOF)."
)
@click.option("--update", is_flag=True, help="Change the settings of a declared topic.")
@URL
def declare(topic: str, unsharded: bool, url: str | None, **options: Any) -> None:
    """Declare TOPIC's policy (a topic nobody declared is live)."""
    # The other options are declare()'s keywords, by name: durable, max_len, max_age,
    # dedup_window, trim_unacked, bare, history, history_ttl, fsync, update.
    with _client(url) as hub:
        policy = hub.declare(topic, sharded=not unsharded, **options)
    click.echo(f"{topic}: {_describe(policy)}")
    if options["durable"] and not topic.endswith(".dead"):
        click.echo(f"dead letters go to {topic}.dead")


@topics.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@URL
def list_topics(as_json: bool, url: str | None) -> None:
    """Declared topics, with their stream length, groups, pending and dead letters, and the
    topics that have subscribers now without being declared (live, undeclared)."""
    with _client(url) as hub:
        declared = hub.topics()
        infos = [hub.topic_info(t) for t in sorted(declared)]
        active = _active(hub, "*")
    rows: list[tuple[str, herald.TopicInfo | None]] = [(i.topic, i) for i in infos]
    rows += [(t, None) for t in active if t not in declared]
    rows.sort(key=lambda row: row[0])
    if as_json:
        for name, info in rows:
            print_json(_topic_record(name, info, active.get(name, 0)))
        return
    if not rows:
        click.echo("no topics declared, none has subscribers (every topic is live)")
        return
    table = Table(box=None, header_style="bold")
    table.add_column("topic", no_wrap=True)
    table.add_column("policy")
    for name in ("subscribers", "entries", "groups", "pending", "dead letters"):
        table.add_column(name, justify="right", no_wrap=True)
    for name, info in rows:
        subscribers = str(active.get(name, 0))
        if info is None:
            table.add_row(Text(name), Text(_UNDECLARED, style="yellow"), subscribers, *"----")
            continue
        durable = info.policy is not None and info.policy.durable
        table.add_row(
            Text(info.topic),
            _describe(info.policy),
            subscribers,
            f"{info.length:,}" if durable else "-",
            str(len(info.groups)) if durable else "-",
            f"{info.pending:,}" if durable else "-",
            f"{info.dead_letters:,}" if durable else "-",
        )
    _console().print(table)


_UNDECLARED = "live (undeclared)"


def _topic_record(name: str, info: herald.TopicInfo | None, subscribers: int) -> dict[str, Any]:
    """A topic as ``topics list --json`` and ``topics show --json`` print it."""
    policy = info.policy if info is not None else None
    record: dict[str, Any] = {
        "topic": name,
        "declared": policy is not None,
        "policy": _describe(policy) if policy is not None else _UNDECLARED,
        "subscribers": subscribers,
    }
    if info is not None and policy is not None and policy.durable:
        record.update(
            entries=info.length,
            first_offset=info.first_offset,
            last_offset=info.last_offset,
            pending=info.pending,
            dead_letters=info.dead_letters,
            groups=[dataclasses.asdict(g) for g in info.groups],
        )
    if info is not None and info.published is not None:
        record["published"] = info.published
    return record


@topics.command("show")
@click.argument("topic")
@click.option("--json", "as_json", is_flag=True, help="The topic as one JSON object.")
@URL
def show(topic: str, as_json: bool, url: str | None) -> None:
    """TOPIC's policy, subscribers, entries, groups (pending, lag) and consumers."""
    with _client(url) as hub:
        info = hub.topic_info(topic)
        subscribers = _active(hub, _literal(topic)).get(topic, 0)
    if info.policy is None and not info.length:
        if as_json:
            print_json(_topic_record(topic, None, subscribers))
            return
        if not subscribers:
            raise click.ClickException(
                f"{topic} is not declared and has no subscribers now: a live topic, nothing "
                "is stored"
            )
        click.echo(f"{topic}  {_UNDECLARED}: not declared, nothing is stored")
        click.echo(f"subscribers   {subscribers}")
        return
    if as_json:
        print_json(_topic_record(topic, info, subscribers))
        return
    console = _console()
    console.print(f"[bold]{shown(topic)}[/]  {_describe(info.policy)}")
    console.print(f"subscribers   {subscribers}")
    if info.policy is not None and not info.policy.durable and not info.length:
        if info.published is not None:
            console.print(f"last offset   {info.published:,}")
        return
    console.print(f"entries       {info.length:,}")
    console.print(f"first entry   {info.first_offset or '-'}  {_when(info.first_time)}")
    console.print(f"last entry    {info.last_offset or '-'}  {_when(info.last_time)}")
    console.print(f"dead letters  {info.dead_letters:,}  ({shown(topic)}.dead)")
    if not info.groups:
        console.print("no consumer groups")
        return
    groups = Table(box=None, header_style="bold", title="groups", title_justify="left")
    for name in ("group", "consumers", "pending", "lag", "last delivered"):
        left = name in ("group", "last delivered")
        groups.add_column(name, justify="left" if left else "right", no_wrap=True)
    consumers = Table(box=None, header_style="bold", title="consumers", title_justify="left")
    for name in ("group", "consumer", "pending", "idle"):
        right = name in ("pending", "idle")
        consumers.add_column(name, justify="right" if right else "left", no_wrap=True)
    for g in info.groups:
        lag = "?" if g.lag is None else f"{g.lag:,}"
        row = (str(len(g.consumers)), f"{g.pending:,}", lag, g.last_delivered)
        groups.add_row(Text(g.name), *row)
        for c in g.consumers:
            consumers.add_row(Text(g.name), Text(c.name), f"{c.pending:,}", f"{c.idle:.1f}s")
    console.print(groups)
    console.print(consumers)


def _active(hub: herald.Client, pattern: str) -> dict[str, int]:
    """Topics with subscribers; none, with a note, when the server refuses ``PUBSUB`` (an ACL
    user without it can still list declared topics)."""
    try:
        return hub.active_topics(pattern)
    except herald.PermissionDenied as exc:
        click.echo(f"subscribers unknown: {exc}", err=True)
        return {}


def _literal(topic: str) -> str:
    """A glob that matches ``topic`` alone (its glob characters escaped)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", topic)


@topics.command("delete")
@click.argument("topic")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@URL
def delete(topic: str, yes: bool, url: str | None) -> None:
    """Delete TOPIC's policy and stream.

    Its consumers stop; TOPIC.dead is a topic of its own and stays.
    """
    with _client(url) as hub:
        if not yes:
            info = hub.topic_info(topic)
            click.confirm(
                f"delete {topic} ({_describe(info.policy)}; entries: {info.length:,}, "
                f"groups: {len(info.groups)})?",
                abort=True,
            )
        existed = hub.delete_topic(topic)
    click.echo(f"deleted {topic}" if existed else f"{topic} was not declared; nothing stored now")


# -- herald dead -----------------------------------------------------------------------------


@click.group()
def dead() -> None:
    """Dead letters: list them, put them back after a fix."""


_LETTER_FIELDS = [f for f in dataclasses.fields(herald.DeadLetter) if f.name != "message"]


@dead.command("list")
@click.argument("topic")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@URL
def dead_list(topic: str, limit: int, as_json: bool, url: str | None) -> None:
    """TOPIC's dead letters, oldest first.

    With why, how often delivered, by whom and when.
    """
    with _client(url) as hub:
        letters = hub.dead_letters(topic, limit=limit)
    if as_json:
        for d in letters:
            # DeadLetter's fields (offset, topic, reason, ... time), then its message's.
            record = {f.name: getattr(d, f.name) for f in _LETTER_FIELDS}
            record.update(
                id=d.message.id,
                key=d.message.key,
                headers={k: v for k, v in d.message.headers.items() if not k.startswith("herald-")},
            )
            key, value = data_field(d.message.data)
            record[key] = value
            print_json(record)
        return
    if not letters:
        click.echo(f"no dead letters for {topic}")
        return
    console = _console()
    for d in letters:  # a few lines each: readable at any terminal width
        console.print(
            f"[bold]{d.offset}[/]  {_when(d.time)[:19]}  {shown(d.group)}/{shown(d.consumer)}"
            f"  deliveries: {d.deliveries}",
            soft_wrap=True,
        )
        console.print(f"  reason:  {shown(d.reason)}", soft_wrap=True)
        console.print(f"  payload: {shown(_preview(d.message.data))}", soft_wrap=True)
    click.echo(
        f"{len(letters)} dead letter(s); put them back: "
        f"herald dead replay {topic} --all (or --id OFFSET ...)",
        err=True,
    )


@dead.command("replay")
@click.argument("topic")
@click.option("--id", "ids", multiple=True, help="A dead letter's offset (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter of TOPIC.")
@URL
def dead_replay(topic: str, ids: Sequence[str], everything: bool, url: str | None) -> None:
    """Put dead letters back on TOPIC.

    Every group of TOPIC gets them again; they are removed from TOPIC.dead. One atomic step
    per dead letter, so running it twice puts nothing back twice.
    """
    if bool(ids) == everything:
        raise click.UsageError("give --id (one or more) or --all")
    with _client(url) as hub:
        done = hub.replay_dead(topic, None if everything else list(ids))
    click.echo(f"put {len(done)} dead letter(s) back on {topic}")
    for old, new in done.items():
        click.echo(f"  {old} -> {new}")
    missing = [i for i in ids if i not in done]
    if missing:
        click.echo(f"not found (replayed already?): {', '.join(missing)}", err=True)


# -- herald replay ---------------------------------------------------------------------------


@click.command()
@click.argument("topic")
@click.option(
    "--from",
    "start",
    default=None,
    help="An entry id (from it, included) or an ISO time; default: the oldest entry.",
)
@click.option("--until", default=None, help="An entry id (included) or an ISO time.")
@click.option("--count", "-n", type=click.IntRange(min=1), default=None, help="At most N.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@URL
def replay(
    topic: str,
    start: str | None,
    until: str | None,
    count: int | None,
    as_json: bool,
    url: str | None,
) -> None:
    """Print a durable TOPIC's stored messages.

    From an entry id or a time on; no group moves, nothing is acked.
    """
    since = None if start is None else _position(start, inclusive=True)
    end = None if until is None else _position(until, inclusive=False)
    console = _console()
    n = 0
    with _client(url) as hub:
        page = min(count or 1000, 1000)
        for msg in hub.replay(topic, since=since, until=end, page=page):
            if count is not None and n >= count:
                break
            n += 1
            _print_stored(console, msg, as_json)
    if not as_json:
        click.echo(f"{n} message(s)", err=True)


@click.command()
@click.argument("topic")
@click.option(
    "--since",
    default=None,
    help="Recoverable topics: an offset (the messages after it); durable topics: an entry id "
    "(after it) or an ISO time (from it). Default: the oldest kept.",
)
@click.option("--limit", "-n", type=click.IntRange(min=1, max=10_000), default=100)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@URL
def history(topic: str, since: str | None, limit: int, as_json: bool, url: str | None) -> None:
    """Print the kept messages of a recoverable or durable TOPIC, oldest first."""
    console = _console()
    with _client(url) as hub:
        policy = hub.topics().get(topic)
        position: Any = None
        if since is not None:
            if policy is not None and policy.history:
                try:
                    position = int(since)
                except ValueError:
                    raise click.BadParameter(
                        "an offset (an integer)", param_hint="--since"
                    ) from None
            else:
                position = _position(since, inclusive=False)
        messages = hub.history(topic, since=position, limit=limit)
    for msg in messages:
        _print_stored(console, msg, as_json)
    if not as_json:
        click.echo(f"{len(messages)} message(s)", err=True)


def _print_stored(console: Console, msg: herald.StoredMessage, as_json: bool) -> None:
    """One stored message (replay, history): a JSON line, or offset, time, key and data."""
    if as_json:
        record = {
            "offset": msg.offset,
            "epoch": msg.epoch,
            "topic": msg.topic,
            "key": msg.key,
            "id": msg.id,
            "timestamp": msg.timestamp,
            "stored_at": msg.stored_at,
            "headers": msg.headers,
        }
        field, value = data_field(msg.data)
        record[field] = value
        print_json(record)
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(msg.stored_at))
    data = msg.data if isinstance(msg.data, str) else json.dumps(jsonable(msg.data))
    key = f" [magenta]{shown(msg.key)}[/]" if msg.key else ""
    console.print(f"[dim]{msg.offset} {stamp}[/]{key} {shown(data)}", markup=True, soft_wrap=True)
